"""``genesis mcp``: runs, trials and champions over the Model Context Protocol, safely.

Read-only unless started with ``allow_write``: then tools that start an optimization or a
validation and that promote a champion are added (never listed otherwise). Over HTTP, every
request's Host and Origin must be on the allow-list (the bind address, the loopback names and
``--allowed-host``: no DNS rebinding), and every request must carry ``Authorization: Bearer
<token>`` when the server is writable or bound beyond loopback. Every path argument is resolved
inside a configured folder (the results folder; config files, and the base config they name,
inside the configs folder) and refused if it is absolute, has a ``..`` part or escapes through a
symlink at any depth. A config may name only built-in or installed (entry point) strategies,
score functions and samplers, never a module to import, unless ``allow_modules``. Expensive tools
run one call at a time (another is answered busy at once). Responses are paginated and
size-limited; errors, of tools and resources alike, are a JSON object with a message and an id
(the server log has the rest), never a traceback.
"""

from __future__ import annotations

import contextlib
import hmac
import ipaddress
import logging
import math
import threading
import uuid
from collections.abc import Callable, Collection
from functools import wraps
from pathlib import Path
from typing import Any, Literal, TypeVar

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ResourceError, ToolError
from mcp.server.transport_security import TransportSecuritySettings
from mcp_types import ToolAnnotations

from genesis_core import __version__
from genesis_core.errors import GenesisError
from genesis_core.fingerprint import differences, strict_json
from genesis_core.plugins import modules_forbidden
from genesis_core.records import ChampionStore, RunFolder, TrialArtifact, finished_runs, finite, walk_forwards

log = logging.getLogger("genesis_core.mcp")
F = TypeVar("F", bound=Callable[..., Any])
MAX_RESPONSE_BYTES = 256_000
MAX_PAGE = 200
READ = ToolAnnotations(read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=False)
WRITE = ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=False, open_world_hint=False)
PROMOTE = ToolAnnotations(read_only_hint=False, destructive_hint=True, idempotent_hint=False, open_world_hint=False)
TOKEN_ENV = "GENESIS_MCP_TOKEN"


class RequestError(GenesisError):
    """A bad request from the client: its message goes back as is."""


def inside(root: Path, relative: str) -> Path:
    """``relative`` resolved inside ``root``, or RequestError: no absolute paths, no ``..``,
    no symlink leading out."""
    if not relative or "\x00" in relative:
        raise RequestError("empty or invalid path")
    candidate = Path(relative)
    if candidate.is_absolute() or relative.startswith(("/", "\\")) or ".." in candidate.parts:
        raise RequestError(f"path {relative!r} must be relative to the served folder, without '..'")
    base = root.resolve()
    resolved = (base / candidate).resolve()
    if not resolved.is_relative_to(base):
        raise RequestError(f"path {relative!r} leads outside the served folder")
    return resolved


def _guarded(forbid: str | None, error: type[Exception] = ToolError) -> Callable[[F], F]:
    """Structured errors raised as ``error``: the message for expected failures, an id for everything.
    With ``forbid`` (why), configs read during the call may not name modules to import."""

    def decorate(fn: F) -> F:
        @wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            error_id = uuid.uuid4().hex[:12]
            try:
                with modules_forbidden(forbid):
                    result = fn(*args, **kwargs)
                size = len(result if isinstance(result, str) else strict_json(result, None))  # strict: NaN is a bug
            except (GenesisError, KeyError, ValueError) as exc:  # KeyError: unknown run or trial fields
                log.info("%s %s failed (%s): %s", error.__name__, fn.__name__, error_id, exc)
                message = str(exc) if not isinstance(exc, KeyError) else f"not found: {exc}"
                raise error(strict_json({"error": {"message": message, "id": error_id}}, None)) from None
            except Exception:
                log.exception("%s %s crashed (%s)", error.__name__, fn.__name__, error_id)
                raise error(strict_json({"error": {"message": "internal error; the server log has the details",
                                                   "id": error_id}}, None)) from None
            if size > MAX_RESPONSE_BYTES:
                raise error(strict_json({"error": {
                    "message": f"response of {size:,} bytes exceeds the {MAX_RESPONSE_BYTES:,}-byte limit; "
                               "ask for less (limit, offset, fields)", "id": error_id}}, None))
            return result

        return wrapper  # type: ignore[return-value]

    return decorate


def _one_at_a_time(fn: F) -> F:
    """An expensive tool runs one call at a time; another arriving meanwhile is answered busy at
    once (rather than queued: ten queued preflights would hold ten times the memory)."""
    lock = threading.Lock()

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if not lock.acquire(blocking=False):
            raise RequestError(f"busy: another {fn.__name__} call is running; try again when it has finished")
        try:
            return fn(*args, **kwargs)
        finally:
            lock.release()

    return wrapper  # type: ignore[return-value]


def _page(items: list[Any], offset: int, limit: int) -> dict[str, Any]:
    if offset < 0 or not 1 <= limit <= MAX_PAGE:
        raise RequestError(f"offset must be >= 0 and limit within 1..{MAX_PAGE}")
    page = items[offset: offset + limit]
    nxt = offset + limit if offset + limit < len(items) else None
    return {"total": len(items), "offset": offset, "limit": limit, "next_offset": nxt, "items": page}


class Genesis:
    """The served folders and what the tools read from them."""

    def __init__(self, results_dir: Path, configs_dir: Path) -> None:
        self.results = results_dir
        self.configs = configs_dir

    def folder(self, run: str) -> RunFolder:
        folder = RunFolder(inside(self.results / "runs", run), within=self.results)
        if not folder.exists():
            raise RequestError(f"{run!r} is a walk-forward: see show_walk_forward" if folder.is_walk_forward()
                               else folder.unended() or f"no run {run!r} (see list_runs)")
        return folder

    def walk_forward(self, name: str) -> RunFolder:
        folder = RunFolder(inside(self.results / "runs", name), within=self.results)
        if not folder.is_walk_forward():
            raise RequestError(f"no walk-forward {name!r} (see list_runs' walk_forwards)")
        return folder

    def trials(self, run: str, numbers: Collection[int]) -> list[dict[str, Any]]:
        """The rows of trials.csv of trials ``numbers``, flat as in the file (``param:<path>`` columns); a
        cell edited to nan or inf is null, as strict JSON has it (the page holding it was an error)."""
        return [{k: finite(v) if isinstance(v, float) else v for k, v in r.to_csv().items()}
                for r in self.folder(run).read_trials_table(numbers=numbers)]

    def champion_store(self, symbol: str, timeframe: str) -> ChampionStore:
        """The store of (symbol, timeframe), refused if the names lead outside the results folder."""
        store = ChampionStore(self.results, symbol, timeframe)
        for path in (store.path, store.history_path):
            inside(self.results, path.relative_to(self.results).as_posix())
        return store

    def study_config(self, config: str) -> Any:
        """A study config inside the configs folder whose base config is inside it too."""
        from genesis_core.study import load_study_config

        cfg = load_study_config(inside(self.configs, config))
        base = Path(cfg.meta.base_config)
        if not base.is_absolute() and not base.exists():  # an assistant starts the server in a folder of its own
            project = self.configs.resolve().parent
            raise RequestError(f"{config}: meta.base_config {str(base)!r} is read from {Path.cwd()}, where the server was "
                               "started, and not found there: start it in the folder the configs' paths are relative to "
                               f"(genesis -C {project if (project / base).exists() else 'FOLDER'} mcp)")
        if not base.resolve().is_relative_to(self.configs.resolve()):
            raise RequestError(f"{config}: meta.base_config {str(base)!r} is outside the configs folder; "
                               "this server reads configs only from there")
        return cfg

    def artifact(self, run: str, trial: int) -> TrialArtifact:
        folder = self.folder(run)
        if not folder.has_trial(trial):
            row = next(iter(self.trials(run, {trial})), None)
            if row is None:
                raise RequestError(f"run {run!r} has no trial {trial}")
            original = row.get("cache_reused_from")
            hint = f"; it was answered from the cache: see trial {original}" if original is not None else \
                f" (state {row['state']}, {row.get('fail_reason') or 'no artifact'})"
            raise RequestError(f"trial {trial} of {run!r} was not evaluated{hint}")
        return folder.read_trial(trial)


def build_server(results_dir: Path, configs_dir: Path = Path("configs"), allow_write: bool = False,
                 allow_modules: bool = False) -> MCPServer:
    """The MCP server over ``results_dir``; write tools only with ``allow_write``; configs may name
    modules to import only with ``allow_modules`` (see plugins)."""
    g = Genesis(results_dir, configs_dir)
    forbid = None if allow_modules else "the MCP server was started without --allow-strategy-modules"
    server = MCPServer("genesis-core", version=__version__, instructions=(
        "Genesis-Core optimizer results: list runs, query trials, read a trial's effective config, metrics and trace, "
        "the validation table, champions and their history. Run and trial names come from list_runs / query_trials."))

    @server.tool(annotations=READ)
    @_guarded(forbid)
    def list_runs(offset: int = 0, limit: int = 50) -> dict[str, Any]:
        """Optimizer runs in the results folder, newest first: study, trials, best trial, validation summary;
        and the walk-forwards (their folds are runs named <study>-wf<i>): folds, and how their tops did out of sample."""
        runs, unreadable = finished_runs(g.results, within=g.results)  # a symlink out of the folder is not listed
        found, left_out = walk_forwards(g.results, within=g.results)
        return {**_page([r.summary() for r in runs], offset, limit), "unreadable": unreadable + left_out,
                "walk_forwards": [{"walk_forward": name, "study": wf.study, "folds": len(wf.folds), "complete": wf.complete,
                                   **wf.aggregate.model_dump(mode="json")} for name, wf in found]}

    @server.tool(annotations=READ)
    @_guarded(forbid)
    def show_run(run: str) -> dict[str, Any]:
        """One run: metadata, signature, sessions, cache statistics, outcome counts, what it should be read with
        (preflight's warnings, the sessions' notes, its trials' warnings, as `genesis runs show` says them) and the
        validation table."""
        from genesis_core.optimizer import folder_cautions

        folder = g.folder(run)
        meta = folder.read_run().model_dump(mode="json", include={
            "study_name", "storage", "signature", "search_space", "versions", "sessions", "cache", "states", "outcomes",
            "best_trial", "identical_outcomes"})
        table = None
        if folder.is_validated():
            v = folder.read_validation()
            table = {"stale": folder.stale(v), "fewer_candidates": v.short(), "reused": v.reused(),  # None, or a caution
                     "passed": v.passed, "best": v.best, "overfitting": v.overfitting.model_dump(mode="json"),
                     "candidates": [{"rank": c.rank, "trial": c.trial, "passed": c.passed, "reasons": c.reasons,
                                     "explore_score": c.explore.production_score, "validation_score": c.validation_score,
                                     "gap": c.gap} for c in v.candidates],
                     "refused": [{"trial": r.trial, "window": [r.start, r.end], "reason": r.reason} for r in v.refused]}
        return {"run": run, **meta, "cautions": folder_cautions(folder), "validation": table}

    @server.tool(annotations=READ)
    @_guarded(forbid)
    def show_walk_forward(walk_forward: str) -> dict[str, Any]:
        """One walk-forward: its settings, each fold's explore and validation blocks, its top (the explore best)
        with its explore and validation score and return beside buying and holding the block, the aggregate,
        and what each fold's run warned of, led by its fold, as `genesis runs show` says it."""
        from genesis_core.optimizer import fold_cautions

        folder = g.walk_forward(walk_forward)
        wf = folder.read_walk_forward()
        return {"walk_forward": walk_forward, **wf.model_dump(mode="json"), "not_out_of_sample": wf.biased(),
                "cautions": fold_cautions(folder, wf)}

    @server.tool(annotations=READ)
    @_guarded(forbid)
    def query_trials(run: str, state: str | None = None, outcome: str | None = None, min_score: float | None = None,
                     max_score: float | None = None, sort_by: str = "number", descending: bool = False,
                     offset: int = 0, limit: int = 50) -> dict[str, Any]:
        """Trials of a run (the rows of trials.csv), filtered by state (COMPLETE, PRUNED, FAIL...), outcome class
        (VALID, DUPLICATE, ZERO_TRADES_BLOCKED...) and production score range, sorted by any column, paginated."""
        # filtered and sorted on the columns asked of, then the page's rows read whole: all of a 981,552-row
        # table read whole took 33 s and 3.7 GB a call
        rows = g.folder(run).read_trials_table(("outcome", "production_score", sort_by))
        first = g.trials(run, {rows[0].number}) if rows else []
        if first and sort_by not in first[0]:
            raise RequestError(f"sort_by {sort_by!r} is not a column; columns: {', '.join(first[0])}")
        picked = [(r.number, r.to_csv().get(sort_by)) for r in rows
                  if (state is None or r.state == state) and (outcome is None or r.outcome == outcome)
                  and (min_score is None or (r.production_score is not None and r.production_score >= min_score))
                  and (max_score is None or (r.production_score is not None and r.production_score <= max_score))]
        present = [(n, v) for n, v in picked if isinstance(v, int | float)]
        absent = [(n, v) for n, v in picked if not isinstance(v, int | float)]
        present.sort(key=lambda nv: nv[1] if not isinstance(nv[1], float) or not math.isnan(nv[1]) else -math.inf, reverse=descending)
        page = _page([n for n, _ in present + absent], offset, limit)
        whole = {r["number"]: r for r in g.trials(run, set(page["items"]))}
        return {**page, "items": [whole[n] for n in page["items"]]}

    @server.tool(annotations=READ)
    @_guarded(forbid)
    def show_trial(run: str, trial: int) -> dict[str, Any]:
        """One evaluated trial: parameters, effective config (re-runnable), fingerprints, metrics, score and decision trace."""
        return g.artifact(run, trial).model_dump(mode="json")

    @server.tool(annotations=READ)
    @_guarded(forbid)
    def compare_trials(run: str, trial_a: int, trial_b: int, run_b: str | None = None) -> dict[str, Any]:
        """The differences between two trials' effective configs (and their metrics), path by path."""
        a, b = g.artifact(run, trial_a), g.artifact(run_b or run, trial_b)
        config = [{"path": p, "a": x, "b": y} for p, x, y in differences(a.effective_config.model_dump(mode="json"),
                                                                          b.effective_config.model_dump(mode="json"))]
        metrics = [{"path": p, "a": x, "b": y} for p, x, y in differences(a.metrics, b.metrics)]
        return {"a": {"run": run, "trial": trial_a, "config_fingerprint": a.fingerprints["config"]},
                "b": {"run": run_b or run, "trial": trial_b, "config_fingerprint": b.fingerprints["config"]},
                "config_differences": config, "metric_differences": metrics}

    @server.tool(annotations=READ)
    @_guarded(forbid)
    def show_champion(symbol: str = "BTCUSD", timeframe: str = "1h", history_offset: int = 0, history_limit: int = 20) -> dict[str, Any]:
        """The current champion of (symbol, timeframe) and its promotion history (newest first, paginated)."""
        store = g.champion_store(symbol, timeframe)
        history = [e.model_dump(mode="json", exclude={"champion"}) for e in reversed(store.history())]
        champion = store.load()
        return {"champion": champion and champion.model_dump(mode="json"), "history": _page(history, history_offset, history_limit)}

    @server.tool(annotations=READ)
    @_guarded(forbid)
    @_one_at_a_time
    def preflight(config: str) -> dict[str, Any]:
        """Preflight checks of an optimizer config (a path inside the configs folder); writes nothing."""
        from genesis_core.preflight import Check, preflight, report

        try:
            cfg = g.study_config(config)
        except RequestError:
            raise
        except GenesisError as exc:
            return report([Check("config", "fail", str(exc))]).model_dump(mode="json")
        return report(preflight(cfg)).model_dump(mode="json")

    @server.resource("genesis://runs/{run}", mime_type="application/json")
    @_guarded(forbid, ResourceError)
    def run_resource(run: str) -> str:
        """A run's metadata (run.json)."""
        return g.folder(run).read_run().model_dump_json(indent=1)

    @server.resource("genesis://champions/{symbol}/{timeframe}", mime_type="application/json")
    @_guarded(forbid, ResourceError)
    def champion_resource(symbol: str, timeframe: str) -> str:
        """A champion file."""
        champion = g.champion_store(symbol, timeframe).load()
        if champion is None:
            raise RequestError(f"no {symbol} {timeframe} champion")
        return champion.model_dump_json(indent=1)

    if allow_write:
        _add_write_tools(server, g, forbid)
    return server


def _add_write_tools(server: MCPServer, g: Genesis, forbid: str | None) -> None:
    @server.tool(annotations=WRITE)
    @_guarded(forbid)
    @_one_at_a_time
    def start_optimization(config: str, ctx: Context, max_trials: int | None = None, skip_preflight: bool = False) -> dict[str, Any]:
        """Run an optimizer config (inside the configs folder) to the end: preflight, explore, then validation and
        promotion as the config says. Blocks until done, reporting the trials evaluated as progress; returns the run summary."""
        import anyio
        import anyio.from_thread

        from genesis_core.optimizer import Progress, RunOptions
        from genesis_core.workflow import run

        stopped = anyio.from_thread.run_sync(anyio.get_cancelled_exc_class)  # the event loop's (this thread has none)

        def progress(p: Progress) -> None:  # a client that asked for progress sees the run move (and may wait on)
            best = "none valid yet" if p.best is None else f"{p.best:.4f}"
            with contextlib.suppress(stopped):  # a cancelled call's: see cancelled()
                anyio.from_thread.run(ctx.report_progress, p.completed, p.total, f"{p.completed:,} trials evaluated, best {best}")

        def cancelled() -> str | None:  # the run stops as on Ctrl-C, its records written: the lock is free for the next
            try:
                anyio.from_thread.check_cancelled()
            except stopped:
                return "the MCP client cancelled start_optimization: the trials in flight finished; start it again to go on"
            return None

        cfg = g.study_config(config)
        options = RunOptions(max_trials=max_trials, stop_asked=cancelled)
        return run(cfg, options, skip_preflight=skip_preflight, on_progress=progress).model_dump(mode="json")

    @server.tool(annotations=WRITE)
    @_guarded(forbid)
    @_one_at_a_time
    def run_validation(run: str, top_n: int | None = None) -> dict[str, Any]:
        """Validate a finished run's top candidates on its out-of-sample windows; returns the passed trials."""
        from genesis_core.workflow import validate_run

        report = validate_run(g.folder(run), top_n=top_n)
        return {"passed": report.passed, "best": report.best, "candidates": len(report.candidates), "refused": len(report.refused)}

    @server.tool(annotations=PROMOTE)
    @_guarded(forbid)
    @_one_at_a_time
    def promote_champion(run: str, trial: int | None = None) -> dict[str, Any]:
        """Promote a validated trial through the gates (validated, reproduces, improves); recorded either way."""
        from genesis_core.workflow import promote_run

        decision = promote_run(g.folder(run), trial)
        return {"promoted": decision.promoted, "reason": decision.reason, "gates": [x.model_dump() for x in decision.gates]}


def bearer_guard(app: Any, token: str) -> Callable[..., Any]:
    """ASGI middleware: HTTP requests without ``Authorization: Bearer <token>`` get 401 (a header
    that is not ASCII included: compared as bytes, never decoded)."""
    expected = f"Bearer {token}".encode()

    async def guarded(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            given = dict(scope.get("headers") or []).get(b"authorization", b"")
            if not hmac.compare_digest(given, expected):
                await send({"type": "http.response.start", "status": 401,
                            "headers": [(b"content-type", b"application/json"), (b"www-authenticate", b"Bearer")]})
                await send({"type": "http.response.body", "body": b'{"error": {"message": "bearer token required"}}'})
                return
        await app(scope, receive, send)

    return guarded


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps the server on this machine."""
    try:
        return host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def transport_security(host: str, allowed_hosts: list[str]) -> TransportSecuritySettings:
    """DNS-rebinding protection for any bind address: Host (with or without a port) and Origin must
    name the bind address, a loopback name or an allowed host. A wildcard bind (0.0.0.0, ::) is not
    a name a client uses: those reach it through ``allowed_hosts``."""
    names = {"127.0.0.1", "localhost", "[::1]", *allowed_hosts}
    if host not in ("0.0.0.0", "::", ""):
        names.add(f"[{host}]" if ":" in host else host)
    return TransportSecuritySettings(
        enable_dns_rebinding_protection=True,
        allowed_hosts=sorted(h for n in names for h in (n, f"{n}:*")),
        allowed_origins=sorted(o for n in names for scheme in ("http", "https") for o in (f"{scheme}://{n}", f"{scheme}://{n}:*")),
    )


def serve(results_dir: Path, configs_dir: Path, allow_write: bool, transport: Literal["stdio", "http"],
          host: str = "127.0.0.1", port: int = 8765, token: str | None = None, allowed_hosts: list[str] | None = None,
          allow_modules: bool = False, json_response: bool = False) -> None:
    """Run the server until stopped. Over HTTP a token is required when writable or beyond loopback;
    ``json_response`` answers plain JSON (stateless) instead of server-sent events."""
    if transport == "http" and not token and (allow_write or not is_loopback(host)):
        why = "--allow-write" if allow_write else f"binding {host} (beyond loopback)"
        raise RequestError(f"{why} over HTTP needs a bearer token in ${TOKEN_ENV}")
    server = build_server(results_dir, configs_dir, allow_write, allow_modules)
    if transport == "stdio":
        server.run("stdio")
        return
    import anyio
    import uvicorn

    app: Any = server.streamable_http_app(streamable_http_path="/mcp", host=host, json_response=json_response,
                                          stateless_http=json_response,
                                          transport_security=transport_security(host, allowed_hosts or []))
    if token and (allow_write or not is_loopback(host)):
        app = bearer_guard(app, token)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning")
    anyio.run(uvicorn.Server(config).serve)
