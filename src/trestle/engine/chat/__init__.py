"""From a chat request to what the engine runs, and back: chat templates in a sandbox (`template`,
bounded by `template_limits`), tools in the prompt and tool calls read back from the output
(`tools`), and the `GenerationSpec` a request becomes (`prompts`)."""
