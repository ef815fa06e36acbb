"""The MCP server through the SDK's own client, over stdio and streamable HTTP, on a real run."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml
from mcp import Client
from mcp.client.stdio import StdioServerParameters
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from genesis_core import mcp_server
from tests.optimizer.test_optimizer import ROOT
from tests.runs import optimize, promote, validate
from tests.validation.conftest import validated_config

READ_TOOLS = {"list_runs", "show_run", "query_trials", "show_trial", "compare_trials", "show_champion", "preflight"}
WRITE_TOOLS = {"start_optimization", "run_validation", "promote_champion"}


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Path:
    """A folder with results/ (a validated run, a champion) and configs/ (the run's config)."""
    tmp = tmp_path_factory.mktemp("mcp")
    config = validated_config(tmp)
    (tmp / "configs").mkdir()
    (tmp / "configs" / "opt.yaml").write_text(config.read_text())
    fresh = yaml.safe_load(config.read_text())
    fresh["meta"].update(study_name="t2", stop={"max_trials": 4})  # a new study, to start from the server
    (tmp / "configs" / "new.yaml").write_text(yaml.safe_dump(fresh))
    run_dir = Path(optimize(config)["run_dir"])
    validate(run_dir)
    assert promote(run_dir).promoted
    outside = tmp / "secret"
    outside.mkdir()
    (outside / "run.json").write_text("{}")
    (tmp / "results" / "runs" / "escape").symlink_to(outside)  # a symlink leading out of the results folder
    return tmp


def _stdio(served: Path, *extra: str) -> Client:
    return Client(StdioServerParameters(command=sys.executable, cwd=str(ROOT), args=[
        "-m", "genesis_core", "mcp", "--results-dir", str(served / "results"), "--configs-dir", str(served / "configs"), *extra]))


def _error(result) -> dict:
    assert result.is_error
    text = result.content[0].text
    return json.loads(text[text.index("{"):])["error"]


async def _exercise_read_tools(client: Client) -> None:
    tools = {t.name: t for t in (await client.list_tools()).tools}
    assert set(tools) == READ_TOOLS and all(t.annotations.read_only_hint for t in tools.values())

    runs = (await client.call_tool("list_runs", {})).structured_content
    assert [r["run"] for r in runs["items"]] == ["t"] and runs["items"][0]["trials"] == 16

    run = (await client.call_tool("show_run", {"run": "t"})).structured_content
    assert run["study_name"] == "t" and run["cache"]["total_trials"] == 16
    assert run["validation"]["candidates"] and run["validation"]["best"] == run["validation"]["passed"][0]

    valid = (await client.call_tool("query_trials", {"run": "t", "outcome": "VALID", "sort_by": "score_phase2",
                                                     "descending": True})).structured_content
    scores = [r["score_phase2"] for r in valid["items"]]
    assert valid["total"] == len(scores) > 0 and scores == sorted(scores, reverse=True)
    assert all(r["outcome"] == "VALID" for r in valid["items"])
    ranged = (await client.call_tool("query_trials", {"run": "t", "min_score": scores[-1] + 1e-9})).structured_content
    assert all(r["score_phase2"] > scores[-1] for r in ranged["items"])

    best = valid["items"][0]["number"]
    trial = (await client.call_tool("show_trial", {"run": "t", "trial": best})).structured_content
    assert trial["trial_number"] == best and {"effective_config", "metrics", "trace", "fingerprints"} <= set(trial)
    other = valid["items"][1]["number"]
    diff = (await client.call_tool("compare_trials", {"run": "t", "trial_a": best, "trial_b": other})).structured_content
    assert diff["config_differences"] and all(d["path"].startswith("params.") for d in diff["config_differences"])

    champion = (await client.call_tool("show_champion", {})).structured_content
    assert champion["champion"]["run"]["study"] == "t" and champion["history"]["items"][0]["action"] == "promote"

    checks = (await client.call_tool("preflight", {"config": "opt.yaml"})).structured_content
    assert {c["name"] for c in checks["checks"]} >= {"config", "data", "inert parameters", "storage"}

    resource = await client.read_resource("genesis://runs/t")
    assert json.loads(resource.contents[0].text)["study_name"] == "t"
    champ = await client.read_resource("genesis://champions/BTCUSD/1h")
    assert json.loads(champ.contents[0].text)["symbol"] == "BTCUSD"

    # errors: structured, with an id, never a traceback; path escapes refused
    for args, message in [({"run": "../results/runs/t", "trial": best}, "without '..'"),
                          ({"run": str(Path("/etc")), "trial": best}, "must be relative"),
                          ({"run": "escape", "trial": best}, "leads outside the served folder"),
                          ({"run": "nope", "trial": best}, "no run 'nope'"),
                          ({"run": "t", "trial": 999}, "has no trial 999")]:
        error = _error(await client.call_tool("show_trial", args))
        assert message in error["message"] and len(error["id"]) == 12 and "Traceback" not in error["message"]
    assert "without '..'" in _error(await client.call_tool("preflight", {"config": "../configs/opt.yaml"}))["message"]
    escape = {"symbol": "../runs/t/run", "timeframe": "x"}  # a champion name that would lead into another file
    assert "'../runs/t/run' is not a name" in _error(await client.call_tool("show_champion", escape))["message"]


def test_stdio_serves_every_read_tool_and_refuses_escapes(served):
    async def main() -> None:
        async with _stdio(served) as client:
            await _exercise_read_tools(client)

            pages, offset = [], 0  # a large listing comes in pages
            while offset is not None:
                page = (await client.call_tool("query_trials", {"run": "t", "limit": 5, "offset": offset})).structured_content
                pages.append(page["items"])
                offset = page["next_offset"]
            assert [len(p) for p in pages] == [5, 5, 5, 1]
            assert [r["number"] for p in pages for r in p] == list(range(16))
            assert "limit within 1..200" in _error(await client.call_tool("query_trials", {"run": "t", "limit": 5000}))["message"]

    asyncio.run(main())


def test_responses_are_size_limited(served, monkeypatch):
    monkeypatch.setattr(mcp_server, "MAX_RESPONSE_BYTES", 2_000)
    server = mcp_server.build_server(served / "results", served / "configs")

    async def main() -> None:
        async with Client(server) as client:  # in-process, to lower the limit
            error = _error(await client.call_tool("show_trial", {"run": "t", "trial": 0}))
            assert "exceeds the 2,000-byte limit" in error["message"]
            assert not (await client.call_tool("list_runs", {"limit": 1})).is_error

    asyncio.run(main())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def _http_server(served: Path, *extra: str, env: dict[str, str] | None = None, host: str = "127.0.0.1"):
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "genesis_core", "mcp", "--http", "--host", host, "--port", str(port),
         "--results-dir", str(served / "results"), "--configs-dir", str(served / "configs"), *extra],
        cwd=ROOT, stderr=subprocess.PIPE, text=True, env={**os.environ, **(env or {})})
    try:
        deadline = time.time() + 60
        while True:
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert proc.poll() is None, proc.stderr.read()
            assert time.time() < deadline, "the MCP server did not start"
            time.sleep(0.1)
        yield f"http://127.0.0.1:{port}/mcp", proc
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def test_http_read_only_by_default(served):
    with _http_server(served) as (url, _):
        async def main() -> None:
            async with Client(url) as client:
                await _exercise_read_tools(client)

        asyncio.run(main())


def test_http_write_tools_need_the_flag_and_the_token(served):
    token = "s3cret-token"
    with _http_server(served, "--allow-write", env={mcp_server.TOKEN_ENV: token}) as (url, _):
        async def without_token() -> None:
            async with Client(url) as client:
                await client.list_tools()

        with pytest.raises(BaseException):  # noqa: B017 - the SDK surfaces the 401 as an error group
            asyncio.run(without_token())
        for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": token}):  # and it is the 401
            request = urllib.request.Request(url, data=b"{}", method="POST", headers={"Content-Type": "application/json", **headers})
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(request, timeout=10)
            assert refused.value.code == 401

        def authed(value: str) -> Client:
            return Client(streamable_http_client(url, http_client=create_mcp_http_client(headers={"Authorization": value})))

        async def wrong_token() -> None:
            async with authed("Bearer nope") as client:
                await client.list_tools()

        with pytest.raises(BaseException):  # noqa: B017
            asyncio.run(wrong_token())

        async def main() -> None:
            async with authed(f"Bearer {token}") as client:
                tools = {t.name: t for t in (await client.list_tools()).tools}
                assert set(tools) == READ_TOOLS | WRITE_TOOLS
                assert not tools["run_validation"].annotations.read_only_hint
                assert tools["promote_champion"].annotations.destructive_hint
                result = (await client.call_tool("run_validation", {"run": "t", "top_n": 4})).structured_content
                assert result["candidates"] == 4 and result["best"] is not None
                again = (await client.call_tool("promote_champion", {"run": "t"})).structured_content
                assert again["promoted"] is False and "improves: this config is already the champion" in again["reason"]
                started = await client.call_tool("start_optimization", {"config": "new.yaml"})
                assert not started.is_error, started.content[0].text
                summary = started.structured_content
                assert summary["preflight"]["ok"] and summary["explore"]["cache"]["total_trials"] == 4 and summary["validation"]
                runs = (await client.call_tool("list_runs", {})).structured_content
                assert {r["run"] for r in runs["items"]} == {"t", "t2"}
                # the resumed study's signature now differs (the champion is merged into its fixed config): refused
                refused = _error(await client.call_tool("start_optimization", {"config": "opt.yaml", "max_trials": 18}))
                assert "preflight failed" in refused["message"] and "fixed_config" in refused["message"]

        asyncio.run(main())


def test_http_write_without_a_token_refuses_to_start_and_other_hosts_warn(served):
    env = {k: v for k, v in os.environ.items() if k != mcp_server.TOKEN_ENV}
    proc = subprocess.run([sys.executable, "-m", "genesis_core", "mcp", "--http", "--allow-write", "--port", str(_free_port()),
                           "--results-dir", str(served / "results")], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=60, check=False)
    assert proc.returncode == 1 and "needs a bearer token in $GENESIS_MCP_TOKEN" in proc.stderr
    with _http_server(served, host="0.0.0.0") as (url, server):  # the warning is the point
        async def main() -> None:
            async with Client(url) as client:
                assert "t" in [r["run"] for r in (await client.call_tool("list_runs", {})).structured_content["items"]]

        asyncio.run(main())
        server.terminate()
        assert "reachable from the network" in server.stderr.read()
