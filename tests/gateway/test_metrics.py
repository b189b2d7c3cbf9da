"""`/metrics`: Prometheus text that prometheus-client's own parser reads, with requests by model,
deployment, environment, route and status, latency and time-to-first-byte histograms, in-flight
gauges, replicas by state, cold starts, and the engine's scheduler counters."""

from __future__ import annotations

from support import SLUG, samples, scrape, value


def test_requests_are_counted_by_model_deployment_environment_route_and_status(server, pushed):
    push = pushed("hello")
    m, d = push["model"]["id"], push["deployment"]["id"]
    before = scrape(server)
    with server.client() as http:
        assert http.post(f"/model/{m}/production/predict", json={}).status_code == 200
        assert http.post(f"/model/{m}/deployment/{d}/sync/predict", json={}).status_code == 200
        assert http.post(f"/model/{m}/environments/nope/predict", json={}).status_code == 404
    after = scrape(server)
    ok = dict(model=m, deployment=d, environment="production", route="predict", status="200")
    assert value(after, "trestle_requests", **ok) == value(before, "trestle_requests", **ok) + 1
    synced = dict(model=m, deployment=d, environment="", route="sync", status="200")
    assert value(after, "trestle_requests", **synced) == value(before, "trestle_requests", **synced) + 1
    missing = dict(kind="model", model="", route="predict", status="404")
    assert value(after, "trestle_requests", **missing) >= value(before, "trestle_requests", **missing) + 1
    count = samples(after, "trestle_request_duration_seconds", model=m, deployment=d,
                    environment="production")
    assert any(s.name.endswith("_count") and s.value >= 1 for s in count)
    # bounded labels: no raw paths, no environment names that were never routed to
    for s in after["trestle_requests"]:
        assert "/" not in s.labels["route"] and s.labels["environment"] != "nope"
    assert value(after, "trestle_deployment_requests_in_flight", model=m, deployment=d) == 0
    assert value(after, "trestle_requests_in_flight", kind="model") == 0
    assert value(after, "trestle_replicas", deployment=d, state="ready") == 1
    assert value(after, "trestle_deployments", status="active") >= 1
    assert value(after, "trestle_cold_starts", deployment=d) >= 1
    starts = samples(after, "trestle_cold_start_duration_seconds", deployment=d)
    assert any(s.name.endswith("_count") and s.value >= 1 for s in starts)


def test_streams_get_a_time_to_first_byte_and_the_engine_its_counters(server):
    body = {"model": SLUG, "messages": [{"role": "user", "content": "Say hi"}], "max_tokens": 8,
            "stream": True}
    with server.client() as http:
        with http.stream("POST", "/v1/chat/completions", json=body) as resp:
            assert resp.status_code == 200
            resp.read()
    families = scrape(server)
    ttfb = samples(families, "trestle_time_to_first_byte_seconds", route="chat_completions",
                   environment="production")
    assert any(s.name.endswith("_count") and s.value >= 1 for s in ttfb)
    generated = samples(families, "trestle_engine_generated_tokens")
    assert generated and sum(s.value for s in generated) >= 1
    assert samples(families, "trestle_engine_active_sequences")
    assert samples(families, "trestle_engine_waiting_requests")
    assert samples(families, "trestle_engine_reused_prompt_tokens")
