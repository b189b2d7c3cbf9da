"""A chat template is code that any key holder sends: it cannot starve the engine.

The bombs run against a real engine worker beside an ordinary request, which must still be
answered; the worker's peak memory (from /proc) must stay bounded. Each limit of the sandbox is
also checked on `render_chat` directly.
"""

from __future__ import annotations

import concurrent.futures as cf
import threading

import httpx
import pytest

from support import SLUG
from trestle.engine.chat.template import render_chat
from trestle.engine.chat.template_limits import RenderCancelled
from trestle.errors import BadRequest

# From the report: 295 MB -> 1.8 GB in one request; 18.5 s of rendering on the event loop.
MEMORY_BOMB = (
    "{% set ns=namespace(s='x') %}{% for i in range(30) %}{% set ns.s=ns.s~ns.s %}{% endfor %}"
)
CPU_BOMB = "{{ ([[1]*1000000]*60)|sum(start=[])|length }}"
# Nothing but loops: only the wall-clock limit stops it.
ENDLESS_LOOPS = "{% for a in 'x' * 100000 %}{% for b in 'x' * 100000 %}{% endfor %}{% endfor %}"
BOUND = 256 * 1024 * 1024  # the bombs above grew the engine by 1.5 GB


def chat(engine, **fields) -> httpx.Response:
    body = {"model": SLUG, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 8,
            "temperature": 0, **fields}
    return httpx.post(f"{engine.url}/v1/chat/completions", json=body, timeout=300)


@pytest.mark.parametrize("bomb", [MEMORY_BOMB, CPU_BOMB, ENDLESS_LOOPS], ids=["memory", "cpu", "loops"])
def test_a_template_bomb_is_refused_while_an_ordinary_request_is_answered(engine, memory, bomb):
    rss_before = memory.rss
    memory.reset_peak()
    with cf.ThreadPoolExecutor(2) as pool:
        refused = pool.submit(chat, engine, chat_template=bomb)
        ordinary = pool.submit(chat, engine)
        refused, ordinary = refused.result(), ordinary.result()
    assert refused.status_code == 400, refused.text
    error = refused.json()["error"]
    assert error["param"] == "chat_template" and "limit" in error["message"]
    assert ordinary.status_code == 200 and ordinary.json()["choices"][0]["message"]["content"]
    assert memory.peak - rss_before < BOUND, f"the engine grew by {(memory.peak - rss_before) >> 20} MB"


def test_several_bombs_at_once_do_not_stop_the_engine(engine, memory):
    rss_before = memory.rss
    memory.reset_peak()
    with cf.ThreadPoolExecutor(7) as pool:
        bombs = [pool.submit(chat, engine, chat_template=b) for b in [MEMORY_BOMB, CPU_BOMB, ENDLESS_LOOPS] * 2]
        ordinary = pool.submit(chat, engine)
        assert ordinary.result().status_code == 200
        assert [b.result().status_code for b in bombs] == [400] * 6
    assert memory.peak - rss_before < BOUND
    assert chat(engine).status_code == 200


# -- the limits, one by one, on render_chat --------------------------------------------------------
def render(template: str, cancel: threading.Event | None = None) -> str:
    return render_chat(template, [{"role": "user", "content": "hi"}], cancel,
                       add_generation_prompt=True, bos_token="<s>", eos_token="</s>")


AMPLIFIERS = {
    "concat": MEMORY_BOMB,
    "sum": CPU_BOMB,
    "plus": "{% set ns=namespace(s='x') %}{% for i in range(30) %}{% set ns.s=ns.s+ns.s %}{% endfor %}",
    "list-plus": "{% set ns=namespace(l=[1]) %}{% for i in range(30) %}{% set ns.l=ns.l+ns.l %}{% endfor %}",
    "nested-repeat": "{{ [['x' * 1000] * 1000] * 1000 }}",
    "shared-literals": "{% set a = ['x' * 100000] %}{% set b = [a,a,a,a,a,a,a,a,a,a,a,a] %}{{ b }}",
    "center-method": "{{ 'a'.center(1000000000) }}",
    "center-filter": "{{ 'a'|center(1000000000) }}",
    "rjust": "{{ 'a'.rjust(1000000000) }}",
    "zfill": "{{ '1'.zfill(1000000000) }}",
    "percent-width": "{{ '%999999999s' % 'a' }}",
    "percent-star": "{{ '%*s' % (999999999, 'a') }}",
    "format-filter": "{{ '%999999999d'|format(1) }}",
    "format-method": "{{ '{:>999999999}'.format('a') }}",
    "format-fields": "{{ ('{0}' * 1000).format('x' * 100000) }}",
    "replace-method": "{{ ('x' * 100000).replace('x', 'y' * 100) }}",
    "replace-empty": "{{ ('x' * 100000)|replace('', 'yyyyyyyyyyyyyyyyyyyyy') }}",
    "join": "{{ (['x'] * 100000)|join('y' * 1000) }}",
    "join-method": "{{ ('y' * 1000).join(['x'] * 100000) }}",
    "indent": "{{ ('x\n' * 100000)|indent(1000) }}",
    "expandtabs": "{{ ('\t' * 100000).expandtabs(1000) }}",
    "power": "{{ 2 ** 1000000 }}",
    "int-square": "{% set ns=namespace(n=3) %}{% for i in range(40) %}{% set ns.n = ns.n * ns.n %}{% endfor %}",
    "tojson": "{% set a = ['x' * 100000] * 9 %}{{ [a, a] | tojson(indent=64) }}",
    "batch": "{{ [1]|batch(100000000, 'x')|list }}",
    "macro-buffer": "{% macro m() %}{% for i in range(900000) %}{{ 'abcdefghij' }}{% endfor %}{% endmacro %}{{ m() }}",
    "range": "{% for i in range(10) %}{% for j in range(1000000) %}{% endfor %}{% endfor %}",
    "loops": ENDLESS_LOOPS,
}


@pytest.mark.parametrize("template", AMPLIFIERS.values(), ids=AMPLIFIERS.keys())
def test_each_amplifier_is_refused_with_a_400_naming_chat_template(template):
    with pytest.raises(BadRequest) as info:
        render(template)
    assert info.value.param == "chat_template"
    assert "limit" in info.value.message, info.value.message
    assert len(info.value.message) < 500


def test_ordinary_uses_of_the_same_operations_still_render():
    text = render(
        "{{ messages[0].content ~ '!' }}|{{ 'ab' * 2 }}|{{ [1] + [2] }}|{{ '%-4s|%03d' % ('a', 7) }}|"
        "{{ '{:>3}'.format('z') }}|{{ 'a-b'.replace('-', '+') }}|{{ [[1], [2]]|sum(start=[]) }}|"
        "{{ ['a', 'b']|join(', ') }}|{{ 'x'|center(5) }}|{{ 2 ** 10 }}|{{ {'k': [1]}|tojson(indent=2) }}"
    )
    assert text == 'hi!|abab|[1, 2]|a   |007|  z|a+b|[1, 2]|a, b|  x  |1024|{\n  "k": [\n    1\n  ]\n}'


def test_a_render_whose_client_left_is_cancelled_not_timed_out():
    cancel = threading.Event()
    outcome: list[BaseException] = []

    def run() -> None:
        try:
            render(ENDLESS_LOOPS, cancel)
        except BaseException as exc:  # noqa: BLE001 - the test looks at which one
            outcome.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    cancel.set()
    thread.join(60)
    assert not thread.is_alive()
    assert isinstance(outcome[0], RenderCancelled), outcome


def test_a_template_past_the_size_limit_is_refused_before_compiling():
    with pytest.raises(BadRequest) as info:
        render("x" * 200_001)
    assert info.value.param == "chat_template" and "limit" in info.value.message
