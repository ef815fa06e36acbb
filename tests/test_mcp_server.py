"""The MCP server through the SDK's own client, over stdio and streamable HTTP, on a real run."""

from __future__ import annotations

import asyncio
import csv
import json
import os
import shutil
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
from mcp.shared.exceptions import MCPError

from genesis_core import mcp_server
from tests.optimizer.test_optimizer import ROOT
from tests.runs import artifacts, genesis, optimize, promote, validate
from tests.validation.conftest import validated_config

INITIALIZE = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
    "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "test", "version": "1"}}}).encode()
READ_TOOLS = {"list_runs", "show_run", "show_walk_forward", "query_trials", "show_trial", "compare_trials", "show_champion",
              "preflight"}
WRITE_TOOLS = {"start_optimization", "run_validation", "promote_champion"}


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Path:
    """A folder with results/ (a validated run, a champion) and configs/ (the run's config and its base
    config), plus the hostile things a served folder can hold: symlinks out of it at every depth and
    configs that name modules to import."""
    tmp = tmp_path_factory.mktemp("mcp")
    configs = tmp / "configs"
    configs.mkdir()
    (configs / "reference.yaml").write_text((ROOT / "configs" / "reference.yaml").read_text())
    config = validated_config(tmp, meta={"base_config": str(configs / "reference.yaml"), "stop": {"max_trials": 16}})
    (configs / "opt.yaml").write_text(config.read_text())
    fresh = yaml.safe_load(config.read_text())
    fresh["meta"].update(study_name="t2", stop={"max_trials": 4})  # a new study, to start from the server
    (configs / "new.yaml").write_text(yaml.safe_dump(fresh))
    outside_base = dict(fresh["meta"], base_config=str(ROOT / "configs" / "reference.yaml"))
    (configs / "outside_base.yaml").write_text(yaml.safe_dump({**fresh, "meta": outside_base}))
    for name, strategy in [("module", "tests.import_marker:Anything"), ("entry", "marker_sma")]:
        base = {"strategy": strategy, "params": {"fast": 10, "slow": 30}}
        (configs / f"{name}_base.yaml").write_text(yaml.safe_dump(base))
        meta = dict(fresh["meta"], base_config=str(configs / f"{name}_base.yaml"), study_name=name, skip_champion_merge=True)
        (configs / f"{name}.yaml").write_text(yaml.safe_dump({"meta": meta, "parameters": {
            "fast": {"type": "int", "low": 5, "high": 20}}}))
    run_dir = Path(optimize(config)["run_dir"])
    validate(run_dir)
    assert promote(run_dir).promoted
    outside = tmp / "secret"
    outside.mkdir()
    (outside / "run.json").write_text("{}")
    (outside / "trial.json").write_text('{"secret": "leaked"}')
    (tmp / "results" / "runs" / "escape").symlink_to(outside)  # a symlink leading out of the results folder
    (run_dir / "trials" / "999999.json").symlink_to(outside / "trial.json")  # ... and one deep inside a run
    champions = tmp / "results" / "champions"
    (champions / "ETHUSD_1h.history.json").symlink_to(outside / "trial.json")  # a champion's history
    return tmp


@pytest.fixture(scope="module")
def plugin_path(tmp_path_factory) -> Path:
    """A folder with an installed package's metadata registering the strategy ``marker_sma`` through
    the ``genesis_core.strategies`` entry point, and the module it names (importing it is harmless)."""
    site = tmp_path_factory.mktemp("site")
    dist = site / "marker_plugin-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: marker-plugin\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[genesis_core.strategies]\nmarker_sma = genesis_core.strategy.sma_cross:SmaCrossStrategy\n")
    return site


def _stdio(served: Path, *extra: str, env: dict[str, str] | None = None) -> Client:
    return Client(StdioServerParameters(command=sys.executable, cwd=str(ROOT), env={**os.environ, **(env or {})}, args=[
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
    assert run["validation"]["stale"] is None

    valid = (await client.call_tool("query_trials", {"run": "t", "outcome": "VALID", "sort_by": "production_score",
                                                     "descending": True})).structured_content
    scores = [r["production_score"] for r in valid["items"]]
    assert valid["total"] == len(scores) > 0 and scores == sorted(scores, reverse=True)
    assert all(r["outcome"] == "VALID" for r in valid["items"])
    ranged = (await client.call_tool("query_trials", {"run": "t", "min_score": scores[-1] + 1e-9})).structured_content
    assert all(r["production_score"] > scores[-1] for r in ranged["items"])

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
    # symlinks out of the served folder, at any depth, are never followed
    assert "leads outside the served folder" in _error(await client.call_tool("show_trial", {"run": "t", "trial": 999999}))["message"]
    leaked = await client.call_tool("compare_trials", {"run": "t", "trial_a": best, "trial_b": 999999})
    assert "leads outside the served folder" in _error(leaked)["message"] and "leaked" not in leaked.content[0].text
    shown = await client.call_tool("show_champion", {"symbol": "ETHUSD"})
    assert "leads outside the served folder" in _error(shown)["message"] and "leaked" not in shown.content[0].text
    # a config's base config must be in the configs folder; a config may not make the server import a module
    assert "is outside the configs folder" in _error(await client.call_tool("preflight", {"config": "outside_base.yaml"}))["message"]
    refused = (await client.call_tool("preflight", {"config": "module.yaml"})).structured_content
    assert not refused["ok"] and "strategy 'tests.import_marker:Anything': a config may not name a module here" in refused["checks"][0]["detail"]
    # resource errors have the tools' shape
    with pytest.raises(MCPError) as missing:
        await client.read_resource("genesis://runs/nope")
    error = json.loads(missing.value.error.message)["error"]
    assert "no run 'nope'" in error["message"] and len(error["id"]) == 12
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

            unended = served / "results" / "runs" / "unended"  # a first session's folder before its end: "no run 'unended'" was said
            (unended / "trials").mkdir(parents=True)
            (unended / "trials" / "000000.json").write_text("{}")
            try:
                said = _error(await client.call_tool("show_run", {"run": "unended"}))["message"]
            finally:
                shutil.rmtree(unended)
            assert said.endswith("unended has no run.json yet: its first session writes it as it ends, and is still running (its 1 "
                                 "trial artifacts so far are in trials/) or was stopped before its end (the same genesis optimize "
                                 "or sweep goes on from its trials and writes it)"), said

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
    address = "127.0.0.1" if host == "0.0.0.0" else host
    try:
        deadline = time.time() + 60
        while True:
            with socket.socket() as s:
                if s.connect_ex((address, port)) == 0:
                    break
            assert proc.poll() is None, proc.stderr.read()
            assert time.time() < deadline, "the MCP server did not start"
            time.sleep(0.1)
        yield f"http://{address}:{port}/mcp", proc
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def _post(url: str, headers: dict[str, str], body: bytes = INITIALIZE) -> tuple[int, str, str]:
    """A raw JSON-RPC POST: status, content type and body, whatever the status."""
    request = urllib.request.Request(url, data=body, method="POST", headers={
        "Content-Type": "application/json", "Accept": "application/json, text/event-stream", **headers})
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:
            return reply.status, reply.headers.get("content-type", ""), reply.read().decode()
    except urllib.error.HTTPError as refused:
        return refused.code, refused.headers.get("content-type", ""), refused.read().decode()


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
                assert summary["preflight"]["ok"] and summary["explore"]["states"] == {"COMPLETE": 4} and summary["validation"]
                runs = (await client.call_tool("list_runs", {})).structured_content
                assert {r["run"] for r in runs["items"]} == {"t", "t2"}
                # the resumed study's signature now differs (the champion is merged into its fixed config): refused
                refused = _error(await client.call_tool("start_optimization", {"config": "opt.yaml", "max_trials": 18}))
                assert "preflight failed" in refused["message"] and "fixed_config" in refused["message"]

        asyncio.run(main())


def test_http_write_or_beyond_loopback_needs_a_token_to_start(served):
    env = {k: v for k, v in os.environ.items() if k != mcp_server.TOKEN_ENV}
    for flags, why in [(["--allow-write"], "--allow-write"), (["--host", "0.0.0.0"], "binding 0.0.0.0 (beyond loopback)")]:
        proc = subprocess.run([sys.executable, "-m", "genesis_core", "mcp", "--http", *flags, "--port", str(_free_port()),
                               "--results-dir", str(served / "results")], cwd=ROOT, env=env, capture_output=True, text=True,
                              timeout=60, check=False)
        assert proc.returncode == 1 and f"{why} over HTTP needs a bearer token in $GENESIS_MCP_TOKEN" in proc.stderr


def test_a_results_folder_without_runs_is_said_as_the_server_starts(served, tmp_path):
    """A mistyped --results-dir in an assistant's config served an empty list of runs, and nothing
    said why; the server still starts (a results folder may get its first run later)."""
    said = []
    for folder in (tmp_path / "reslts", served / "results"):
        proc = subprocess.run([sys.executable, "-m", "genesis_core", "mcp", "--results-dir", str(folder)], cwd=ROOT, input="",
                              capture_output=True, text=True, timeout=60, check=False)
        assert proc.returncode == 0, proc.stderr
        said.append(proc.stderr)
    assert said[0] == f"warning: {tmp_path / 'reslts'} holds no runs/ folder: the assistant will find no run (--results-dir)\n"
    assert "warning" not in said[1]


def test_beyond_loopback_every_request_needs_the_token_and_a_known_host(served):
    token = "t0ken"
    with _http_server(served, "--allowed-host", "genesis.example", host="0.0.0.0", env={mcp_server.TOKEN_ENV: token}) as (url, server):
        assert _post(url, {})[0] == 401  # read-only, and still refused without the token
        assert _post(url, {"Authorization": "Bearer wrong"})[0] == 401
        assert _post(url, {"Authorization": "Bearer t\u00f6ken"})[0] == 401  # not ASCII: refused, not a 500
        authed = {"Authorization": f"Bearer {token}"}
        assert _post(url, authed)[0] == 200
        port = url.split(":")[2].split("/")[0]
        assert _post(url, {**authed, "Host": f"genesis.example:{port}"})[0] == 200
        assert _post(url, {**authed, "Host": "evil.example"})[0] == 421
        assert _post(url, {**authed, "Origin": "http://evil.example"})[0] == 403

        async def main() -> None:
            client = Client(streamable_http_client(url, http_client=create_mcp_http_client(headers=authed)))
            async with client:
                assert "t" in [r["run"] for r in (await client.call_tool("list_runs", {})).structured_content["items"]]

        asyncio.run(main())
        server.terminate()
        log = server.stderr.read()
        assert "reachable from the network" in log and "Traceback" not in log


def test_dns_rebinding_is_refused_on_any_loopback_address(served):
    with _http_server(served, host="127.0.0.2") as (url, _):
        port = url.split(":")[2].split("/")[0]
        assert _post(url, {})[0] == 200  # the bind address itself (Host 127.0.0.2:port)
        assert _post(url, {"Host": f"localhost:{port}"})[0] == 200
        assert _post(url, {"Host": "evil"})[0] == 421
        assert _post(url, {"Host": f"evil:{port}"})[0] == 421
        assert _post(url, {"Origin": "http://evil"})[0] == 403
        assert _post(url, {"Origin": f"http://127.0.0.2:{port}"})[0] == 200


def test_json_response_mode_answers_plain_json(served):
    with _http_server(served, "--json-response") as (url, _):
        status, kind, body = _post(url, {"Accept": "application/json"})
        assert status == 200 and kind.startswith("application/json")
        assert json.loads(body)["result"]["serverInfo"]["name"] == "genesis-core"
        call = json.dumps({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "list_runs", "arguments": {}}})
        status, kind, body = _post(url, {"Accept": "application/json"}, call.encode())
        assert status == 200 and "t" in [r["run"] for r in json.loads(body)["result"]["structuredContent"]["items"]]
    with _http_server(served) as (url, _):  # without the flag: server-sent events, as the SDK's clients expect
        assert _post(url, {"Accept": "application/json"})[0] == 406


def test_strategies_come_from_built_ins_or_entry_points_unless_modules_are_allowed(served, plugin_path, tmp_path):
    marker = tmp_path / "imported"
    env = {"GENESIS_IMPORT_MARKER": str(marker), "PYTHONPATH": os.pathsep.join([str(plugin_path), str(ROOT)])}

    async def preflight(client: Client, config: str) -> dict:
        return (await client.call_tool("preflight", {"config": config})).structured_content

    async def main() -> None:
        async with _stdio(served, env=env) as client:
            refused = await preflight(client, "module.yaml")
            assert "may not name a module here" in refused["checks"][0]["detail"]
            assert not marker.exists()  # the module was never imported
            installed = await preflight(client, "entry.yaml")  # an installed package's strategy, by name
            assert installed["checks"][0]["status"] == "pass", installed["checks"][0]
        async with _stdio(served, "--allow-strategy-modules", env=env) as client:
            allowed = await preflight(client, "module.yaml")
            assert marker.read_text() == "imported"
            assert "is a object, not a genesis_core.strategy.Strategy subclass" in allowed["checks"][0]["detail"]

    asyncio.run(main())


def test_expensive_calls_run_one_at_a_time_and_the_rest_are_answered_busy(served):
    server = mcp_server.build_server(served / "results", served / "configs")

    async def main() -> None:
        async with Client(server) as client:
            started = time.perf_counter()
            results = await asyncio.gather(*(client.call_tool("preflight", {"config": "opt.yaml"}) for _ in range(6)))
            done = [r for r in results if not r.is_error]
            busy = [_error(r)["message"] for r in results if r.is_error]
            assert len(done) == 1 and {c["name"] for c in done[0].structured_content["checks"]} >= {"config", "smoke run", "storage"}
            assert len(busy) == 5 and all(m.startswith("busy: another preflight call is running") for m in busy)
            assert time.perf_counter() - started < 60
            again = await client.call_tool("preflight", {"config": "opt.yaml"})  # free again once it finished
            statuses = [(c["name"], c["status"]) for c in done[0].structured_content["checks"]]
            assert not again.is_error and [(c["name"], c["status"]) for c in again.structured_content["checks"]] == statuses

    asyncio.run(main())


def test_query_trials_pages_are_the_whole_rows_filtered_and_sorted_though_only_their_columns_are_read(served, tmp_path):
    """query_trials read every cell of trials.csv each call (981,552 rows: 33 s, 3.7 GB). It now
    filters and sorts on the columns asked of and reads the page's rows whole; each page is still
    the whole rows filtered and sorted: here with a parameter only later sessions searched (rows
    without it come last, in file order) and a metric one row lacks (it comes last)."""
    import csv
    import math
    import shutil

    from genesis_core.records import RunFolder

    copy = tmp_path / "results" / "runs" / "t"
    shutil.copytree(served / "results" / "runs" / "t", copy, symlinks=True)
    table = copy / "trials.csv"
    with table.open() as fh:
        rows = list(csv.DictReader(fh))
    for i, row in enumerate(rows):
        row["param:extra"] = str(i % 5 * 0.5) if i >= 8 else ""  # searched from trial 8 on
    rows[3]["sharpe"] = ""  # not measured
    with table.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    whole = [r.to_csv() for r in RunFolder(copy).read_trials_table()]

    def expected(sort_by, descending=False, outcome=None, min_score=None):  # what the tool gave before, from whole rows
        picked = [r for r in whole if (outcome is None or r["outcome"] == outcome)
                  and (min_score is None or (r["production_score"] is not None and r["production_score"] >= min_score))]
        present = [r for r in picked if isinstance(r.get(sort_by), int | float)]
        absent = [r for r in picked if not isinstance(r.get(sort_by), int | float)]
        present.sort(key=lambda r: r[sort_by] if not (isinstance(r[sort_by], float) and math.isnan(r[sort_by])) else -math.inf,
                     reverse=descending)
        return present + absent

    server = mcp_server.build_server(tmp_path / "results", served / "configs")
    scores = sorted(r["production_score"] for r in whole if r["production_score"] is not None)

    async def main() -> None:
        async with Client(server) as client:
            for query in ({"sort_by": "param:extra", "descending": True}, {"sort_by": "sharpe"}, {"sort_by": "config_fingerprint"},
                          {"sort_by": "production_score", "descending": True, "outcome": "VALID"},
                          {"sort_by": "number", "min_score": scores[len(scores) // 2]}):
                want, got, offset = expected(**query), [], 0
                while offset is not None:
                    result = await client.call_tool("query_trials", {"run": "t", **query, "limit": 3, "offset": offset})
                    assert not result.is_error, result.content
                    page = result.structured_content
                    assert page["total"] == len(want)
                    got += page["items"]
                    offset = page["next_offset"]
                assert json.dumps(got, sort_keys=True) == json.dumps(want, sort_keys=True), query
                if query["sort_by"] == "param:extra":  # those without it last, in file order
                    assert [r["number"] for r in got][-8:] == list(range(8))
            error = _error(await client.call_tool("query_trials", {"run": "t", "sort_by": "nope"}))
            assert error["message"] == f"sort_by 'nope' is not a column; columns: {', '.join(whole[0])}"

    asyncio.run(main())


def test_a_trials_table_cell_edited_to_nan_or_inf_is_served_as_null(served, tmp_path):
    """trials.csv never holds a NaN (a metric beyond the arithmetic is written empty), but a table
    edited by hand can: every page holding its row was an error ("Out of range float values are not
    JSON compliant"). Such a cell is null, as in every JSON Genesis-Core writes; the sort is as before."""
    import csv
    import shutil

    copy = tmp_path / "results" / "runs" / "t"
    shutil.copytree(served / "results" / "runs" / "t", copy, symlinks=True)
    table = copy / "trials.csv"
    with table.open() as fh:
        rows = list(csv.DictReader(fh))
    rows[2]["sharpe"], rows[4]["sharpe"], rows[5]["production_score"] = "nan", "inf", "-inf"
    with table.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    server = mcp_server.build_server(tmp_path / "results", served / "configs")

    async def main() -> None:
        async with Client(server) as client:
            result = await client.call_tool("query_trials", {"run": "t", "sort_by": "sharpe", "descending": True, "limit": 100})
            assert not result.is_error, result.content
            items = result.structured_content["items"]
            assert [r["number"] for r in items][0] == 4 and [r["number"] for r in items][-1] == 2  # inf first, nan last
            assert (items[0]["sharpe"], items[-1]["sharpe"]) == (None, None)
            assert next(r for r in items if r["number"] == 5)["production_score"] is None
            kept = {int(r["number"]): float(r["sharpe"]) for r in rows if r["sharpe"] not in ("", "nan", "inf")}
            assert {r["number"]: r["sharpe"] for r in items if r["number"] in kept} == kept

    asyncio.run(main())


def test_foreign_files_in_trials_are_left_alone(served, tmp_path):
    import shutil

    from genesis_core.records import RunFolder
    from genesis_core.validation import check_equivalence

    copy = tmp_path / "results" / "runs" / "t"
    shutil.copytree(served / "results" / "runs" / "t", copy, symlinks=True)
    (copy / "trials" / "777777.json").write_text('{"not": "an artifact"}')  # planted, not a symlink
    folder = RunFolder(copy)
    assert 777777 not in folder.evaluated_numbers() and 999999 not in folder.trial_numbers()
    report = validate(copy)
    assert report["evaluated_trials"] == len(artifacts(folder)) > 0 and report["candidates"]
    assert all(r.ok for r in check_equivalence(folder, folder.evaluated_numbers()[:2]))


def test_a_validation_made_before_the_run_s_later_trials_is_shown_stale(served, tmp_path):
    """An assistant reading show_run's validation table could not tell a validation.json made of
    fewer trials than the run now has (its candidates and DSR are not the run's; promotion refuses
    it): the table now says so, and why it has fewer candidates than top_n when it has."""
    import shutil

    copy = tmp_path / "served"
    shutil.copytree(served / "results" / "runs" / "t", copy / "results" / "runs" / "t", symlinks=True)
    (copy / "configs").mkdir()
    path = copy / "results" / "runs" / "t" / "validation.json"
    report = json.loads(path.read_text())
    report["evaluated_trials"] -= 6  # as if made 6 trials ago
    path.write_text(json.dumps(report))

    async def main() -> None:
        async with _stdio(copy) as client:
            run = (await client.call_tool("show_run", {"run": "t"})).structured_content
            assert run["validation"]["stale"] == (f"validation.json was made of {report['evaluated_trials']} evaluated "
                                                  f"trial(s), the run now has {report['evaluated_trials'] + 6}")
            assert run["validation"]["fewer_candidates"] is None  # top_n 4 of 16 trials: enough could be candidates

    asyncio.run(main())


def test_show_run_says_what_the_run_should_be_read_with_as_runs_show_does(tmp_path):
    """An assistant reading show_run had the count of identical outcomes and nothing of what they
    point at, nor of preflight's warnings or the failures; it now has the lines `runs show` prints."""
    from tests.runs import genesis

    config = validated_config(tmp_path, meta={"stop": {"max_trials": 8}}, parameters={
        "exits.max_bars_held": {"type": "categorical", "choices": [12, 24]},
        "thresholds.entry_conf_overall": {"type": "float", "low": 0.5, "high": 0.6}})  # inert: the zones override it
    run_dir = Path(optimize(config)["run_dir"])
    (tmp_path / "configs").mkdir()
    shown = genesis("runs", "show", str(run_dir))
    said = [line.removeprefix("warning: ") for line in " ".join(shown.stderr.split()).split(" warning: ")]
    assert shown.returncode == 0 and "thresholds.entry_conf_overall (all" in said[0], shown.stderr

    async def main() -> None:
        async with _stdio(tmp_path) as client:
            run = (await client.call_tool("show_run", {"run": run_dir.name})).structured_content
            assert [" ".join(line.split()) for line in run["cautions"]] == said and run["identical_outcomes"] > 0

    asyncio.run(main())


def test_a_walk_forward_is_served_with_its_folds_and_what_they_warned_of(tmp_path):
    """An assistant saw a walk-forward's fold runs (<study>-wf<i>) and nothing of the walk-forward:
    its folds, the tops' scores out of sample, the aggregate. list_runs names it, show_walk_forward
    gives walk_forward.json and the lines `runs show` warns with, and show_run points there."""
    from genesis_core.study import load_study_config
    from genesis_core.workflow import walk_forward
    from tests.runs import genesis

    config = validated_config(tmp_path, meta={"stop": {"max_trials": 6}}, validation={
        "windows": [{"start": "2022-06-01", "end": "2022-06-30"}], "top_n": 2,
        "walk_forward": {"folds": 2, "start": "2022-01-01", "end": "2022-09-30"}})
    done = walk_forward(load_study_config(config))
    name = done.path.parent.name
    shown = genesis("runs", "show", name, "--results-dir", str(tmp_path / "results"))
    warned = [line.removeprefix("warning: ") for line in shown.stderr.splitlines() if line.startswith("warning: ")]
    assert shown.returncode == 0 and warned, shown.stderr
    (tmp_path / "configs").mkdir()

    async def main() -> None:
        async with _stdio(tmp_path) as client:
            listed = (await client.call_tool("list_runs", {})).structured_content
            aggregate = done.report.aggregate.model_dump(mode="json")
            assert listed["walk_forwards"] == [{"walk_forward": name, "study": "t", "folds": 2, "complete": True, **aggregate}]
            assert sorted(r["run"] for r in listed["items"]) == ["t-wf1", "t-wf2"]
            wf = (await client.call_tool("show_walk_forward", {"walk_forward": name})).structured_content
            stored = json.loads((done.path).read_text())
            assert {k: wf[k] for k in stored} == stored and wf["not_out_of_sample"] is None and wf["cautions"] == warned
            assert f"'{name}' is a walk-forward: see show_walk_forward" in _error(
                await client.call_tool("show_run", {"run": name}))["message"]
            assert "no walk-forward 't-wf1'" in _error(await client.call_tool("show_walk_forward", {"walk_forward": "t-wf1"}))["message"]

    asyncio.run(main())


def test_a_server_an_assistant_starts_elsewhere_reads_the_configs_paths_from_the_folder_given_with_C(tmp_path):
    """An assistant starts the server in a folder of its own (Claude Desktop: /). Given absolute
    --results-dir and --configs-dir, as README said, preflight refused a config whose
    base_config is `configs/reference.yaml` as `outside the configs folder`, and start_optimization
    would have written its run under that folder's results/, which the server does not serve.
    `genesis -C PROJECT mcp` runs as if started in the project folder. And a run it starts has its
    trials evaluated, where every one failed, and reports them as progress."""
    project, elsewhere = tmp_path / "project", tmp_path / "elsewhere"
    (project / "configs").mkdir(parents=True)
    (project / "results" / "runs").mkdir(parents=True)
    elsewhere.mkdir()
    (project / "configs" / "reference.yaml").write_text((ROOT / "configs" / "reference.yaml").read_text())
    config = validated_config(tmp_path, meta={"base_config": "configs/reference.yaml", "results_dir": "results",
                                              "study_name": "here", "stop": {"max_trials": 3}})
    (project / "configs" / "opt.yaml").write_text(config.read_text())

    def server(*args: str) -> Client:
        return Client(StdioServerParameters(command=sys.executable, cwd=str(elsewhere), env=dict(os.environ),
                                            args=["-m", "genesis_core", *args]))

    async def main() -> None:
        async with server("mcp", "--results-dir", str(project / "results"), "--configs-dir", str(project / "configs")) as client:
            error = _error(await client.call_tool("preflight", {"config": "opt.yaml"}))
            assert error["message"] == (
                f"opt.yaml: meta.base_config 'configs/reference.yaml' is read from {elsewhere}, where the server was started, "
                f"and not found there: start it in the folder the configs' paths are relative to (genesis -C {project} mcp)")
        async with server("-C", str(project), "mcp", "--allow-write") as client:
            checks = (await client.call_tool("preflight", {"config": "opt.yaml"})).structured_content
            assert checks["ok"] and {c["name"] for c in checks["checks"]} >= {"config", "data", "storage"}
            seen: list[tuple[float, float | None, str | None]] = []

            async def progress(done: float, total: float | None, message: str | None) -> None:
                seen.append((done, total, message))

            started = await client.call_tool("start_optimization", {"config": "opt.yaml"}, progress_callback=progress)
            assert not started.is_error, started.content[0].text
            best = max(r["production_score"] for r in (await client.call_tool("query_trials", {"run": "here"})).structured_content["items"])
            assert seen[-1] == (3, 3, f"3 trials evaluated, best {best:.4f}")  # it blocks, but says how far it got
            explore = started.structured_content["explore"]  # run in the server's thread, its trials once failed: "strategy
            assert explore["states"] == {"COMPLETE": 3}       # 'reference' raised ValueError: signal only works in main thread"
            assert [r["run"] for r in (await client.call_tool("list_runs", {})).structured_content["items"]] == ["here"]

    asyncio.run(main())
    assert json.loads((project / "results" / "runs" / "here" / "run.json").read_text())["study_name"] == "here"
    assert not (elsewhere / "results").exists()
    for missing in (tmp_path / "nope", project / "configs" / "opt.yaml"):
        proc = subprocess.run([sys.executable, "-m", "genesis_core", "-C", str(missing), "runs", "list"], cwd=elsewhere,
                              capture_output=True, text=True, timeout=60, check=False, env={**os.environ, "COLUMNS": "300"})
        assert proc.returncode == 2 and f"Invalid value for -C: {missing}: not a folder" in proc.stderr, proc.stderr


def test_a_cancelled_start_optimization_stops_its_run_as_ctrl_c_does_and_frees_the_server(tmp_path):
    """A client that cancelled a long `start_optimization` (its own timeout, a user's stop) left the
    run going in the server until its budget was spent, and every later call answered busy. Now the
    run stops after the trials in flight, as on Ctrl-C, its records written, and the study goes on
    from there at the next call."""
    import anyio

    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "sma.yaml").write_text((ROOT / "configs" / "sma_cross.yaml").read_text())
    (tmp_path / "configs" / "long.yaml").write_text(yaml.safe_dump({
        "meta": {"base_config": "configs/sma.yaml", "data": str(ROOT / "data" / "BTCUSD_1h_bitfinex.csv.gz"),
                 "sample_start": "2022-01-01", "sample_end": "2022-12-31", "study_name": "long", "results_dir": "results",
                 "stop": {"max_trials": 5000}},
        "parameters": {"fast": {"type": "int", "low": 5, "high": 60}, "slow": {"type": "int", "low": 61, "high": 400}},
        "validation": {"enabled": False}}))
    (tmp_path / "results" / "runs").mkdir(parents=True)
    params = StdioServerParameters(command=sys.executable, cwd=str(tmp_path), env=dict(os.environ),
                                   args=["-m", "genesis_core", "mcp", "--allow-write"])
    run_json = tmp_path / "results" / "runs" / "long" / "run.json"

    async def main() -> None:
        async with Client(params) as client:
            async with anyio.create_task_group() as tg:
                async def progress(done: float, total: float | None, message: str | None) -> None:
                    if done >= 20:
                        tg.cancel_scope.cancel()

                async def start() -> None:
                    await client.call_tool("start_optimization", {"config": "long.yaml", "skip_preflight": True},
                                           progress_callback=progress)

                tg.start_soon(start)
            with anyio.fail_after(60):  # the run winds down and writes its records
                while not run_json.exists():
                    await anyio.sleep(0.1)
            session = json.loads(run_json.read_text())["sessions"][-1]
            assert session["interrupted"] and session["stopped_reason"] == (
                "the MCP client cancelled start_optimization: the trials in flight finished; start it again to go on")
            done = json.loads(run_json.read_text())["cache"]["total_trials"]
            assert 20 <= done < 5000
            again = await client.call_tool("start_optimization", {"config": "long.yaml", "skip_preflight": True,
                                                                  "max_trials": done + 5})
            assert not again.is_error, again.content[0].text  # not "busy"
            assert again.structured_content["explore"]["states"] == {"COMPLETE": done + 5}

    asyncio.run(main())


def test_a_trial_that_crashes_its_process_fails_and_the_server_started_it_goes_on(tmp_path):
    """`start_optimization` ran a one-worker session's trials in the server's own process: a trial
    whose compiled code crashed (a plugin's kernel reading address 0) ended the server, and the
    assistant lost it with the run half written. A server's run now measures each trial in a process
    of its own: the crash fails that trial with the reason, the others complete the budget, and the
    server answers the next call."""
    from tests.optimizer.test_accounting import _crashing_config

    served = tmp_path / "served"
    (served / "configs").mkdir(parents=True)
    (served / "results").mkdir()
    config = _crashing_config(served / "configs", "crashes at period 17", results_dir=str(served / "results"),
                              stop={"max_trials": 4})

    async def main() -> None:
        async with _stdio(served, "--allow-write", "--allow-strategy-modules") as client:
            started = await client.call_tool("start_optimization", {"config": config.name, "skip_preflight": True})
            assert not started.is_error, started.content[0].text
            assert started.structured_content["explore"]["states"] == {"COMPLETE": 3, "FAIL": 1}
            trials = (await client.call_tool("query_trials", {"run": "t"})).structured_content  # the server still answers
            assert trials["total"] == 4, trials

    asyncio.run(main())
    rows = list(csv.DictReader((served / "results" / "runs" / "t" / "trials.csv").open()))
    failed = [r for r in rows if r["state"] == "FAIL"]
    assert [(r["param:period"], r["fail_reason"]) for r in failed] == [("17", (
        "its measuring process died of SIGSEGV (Segmentation fault) evaluating it: a crash of compiled code (a strategy's, "
        "a feature's or a library's), not queued again"))]
    assert sorted(int(r["param:period"]) for r in rows if r["state"] == "COMPLETE") == [10, 20, 30]
    check = genesis("check-equivalence", str(served / "results" / "runs" / "t"), "--all", "--json")  # each re-run alone
    assert check.returncode == 0 and len(json.loads(check.stdout)) == 3, check.stdout


def test_backtests_that_crash_validation_or_promotion_are_refused_and_the_server_goes_on(tmp_path):
    """`run_validation` and `promote_champion` ran their backtests in the server's process: a
    candidate, or a champion, whose compiled code crashed on a validation window's bars (a plugin's
    kernel reading address 0) ended the server. Now they run in a process of their own: the
    candidate is refused on that window, the champion has no score to beat there, each with the
    reason, as the command line says them, and the server answers the next call."""
    from tests.validation.test_champion import _champion_with_a_bug_then_a_run_on_2023
    from tests.validation.test_validation import CRASHED, _swept_with_a_bug_on_2023

    _swept_with_a_bug_on_2023(tmp_path, "crashes on 2023")  # run t: its second candidate crashes on 2023
    _champion_with_a_bug_then_a_run_on_2023(tmp_path, "crashes on 2023")  # the champion crashes on run second's window
    (tmp_path / "configs").mkdir()

    async def main() -> None:
        async with _stdio(tmp_path, "--allow-write", "--allow-strategy-modules") as client:
            validated = await client.call_tool("run_validation", {"run": "t"})
            assert not validated.is_error, validated.content[0].text
            assert (validated.structured_content["candidates"], validated.structured_content["refused"]) == (2, 1)
            promoted = await client.call_tool("promote_champion", {"run": "second"})
            assert not promoted.is_error, promoted.content[0].text
            assert promoted.structured_content["promoted"], promoted.structured_content
            improves = next(g for g in promoted.structured_content["gates"] if g["name"] == "improves")
            assert improves["detail"].endswith("; the champion cannot be re-run on the same windows: refused on the validation "
                                               "window 2023-01-01..2023-03-31: " + CRASHED.format("promotion"))
            runs = (await client.call_tool("list_runs", {})).structured_content  # the server still answers
            assert {r["run"] for r in runs["items"]} == {"t", "first", "second"}, runs

    asyncio.run(main())
    refused = json.loads((tmp_path / "results" / "runs" / "t" / "validation.json").read_text())["refused"]
    assert [(r["start"], r["reason"]) for r in refused] == [("2023-01-01", CRASHED.format("validation"))]
