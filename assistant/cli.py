"""The `scholia` command.

`scholia eval …` imports the evaluation harness (and RAGAS, LangChain, matplotlib) only when it
runs: the app's commands work where the `eval` extra is not installed.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import sys
from contextlib import ExitStack
from enum import StrEnum
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from typer._click.core import Command, Context  # typer ships its own click
from typer.core import TyperGroup

from scholia.offline import apply_offline_env
from scholia.settings import Settings, config_path, get_settings

if TYPE_CHECKING:
    from assistant.shutdown import Shutdown
    from assistant.vllm_server import VllmServer
    from ingest.pipeline import WriteStage

app = typer.Typer(
    help="Scholia: cited answers from a collection of research papers.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
model_app = typer.Typer(help="The packaged LLM (assembled and converted into the data directory).")
app.add_typer(model_app, name="model")


class EvalCommands(TyperGroup):
    """`scholia eval`: its subcommands come from `eval.cli.eval_app`, imported on first use."""

    @cached_property
    def _eval_group(self) -> TyperGroup:
        try:
            from eval.cli import eval_app
        except ModuleNotFoundError as error:  # the app image has neither eval/ nor its extra
            _fail(
                f"`scholia eval` needs the evaluation harness ({error}): a source checkout "
                "with `make setup`, or `pip install -e '.[eval]'`"
            )
        return typer.main.get_group(eval_app)

    def list_commands(self, ctx: Context) -> list[str]:
        return self._eval_group.list_commands(ctx)

    def get_command(self, ctx: Context, cmd_name: str) -> Command | None:
        return self._eval_group.get_command(ctx, cmd_name)


app.add_typer(
    typer.Typer(),
    name="eval",
    cls=EvalCommands,
    help="Evaluate retrieval and answers on a question suite; compare runs; benchmark.",
    no_args_is_help=True,
)


@app.callback()
def offline() -> None:
    """Before any command loads a library: keep every library offline (scholia.offline)."""
    apply_offline_env(get_settings().data_dir)


ChromaUrl = Annotated[
    str | None,
    typer.Option(
        "--chroma-url",
        help="Use a `chroma run` server (http://host:port) instead of the embedded index.",
    ),
]


def _settings(chroma_url: str | None = None) -> Settings:
    settings = get_settings()
    if chroma_url:
        settings = settings.model_copy(
            update={"index": settings.index.model_copy(update={"chroma_url": chroma_url})}
        )
    return settings


def _fail(message: str) -> None:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


class Engine(StrEnum):
    local = "local"
    ray = "ray"


def _write_stage(engine: Engine, address: str | None) -> WriteStage | None:
    """The ingest's write stage: None (the pipeline's own) or Ray's, loaded only then."""
    if engine is Engine.local:
        if address:
            _fail("--address needs --engine ray")
        return None
    if importlib.util.find_spec("ray") is None:
        _fail("--engine ray needs Ray: pip install -r requirements/scale.lock")
    from ingest.ray_engine import ray_write_stage

    return ray_write_stage(address)


@app.command()
def ingest(
    paths: Annotated[
        list[Path] | None,
        typer.Argument(
            help="Corpus files: the papers page format or JSON Lines. Default: the bundled corpus."
        ),
    ] = None,
    sync: Annotated[
        bool, typer.Option(help="Remove papers that are no longer in the sources.")
    ] = False,
    rebuild: Annotated[bool, typer.Option(help="Delete the index and build it anew.")] = False,
    chroma_url: ChromaUrl = None,
    engine: Annotated[
        Engine, typer.Option(help="local: this process; ray: chunk and embed on a Ray cluster.")
    ] = Engine.local,
    address: Annotated[
        str | None,
        typer.Option(help="--engine ray: the cluster to join (host:port); default: a local one."),
    ] = None,
) -> None:
    """Parse, chunk, embed and index papers (idempotent: unchanged papers are skipped)."""
    from ingest.pipeline import IngestLockedError, IngestWriteError, run_ingest
    from ingest.store import IndexMismatchError, StoreUnavailableError

    settings = _settings(chroma_url)
    try:
        report = run_ingest(
            settings,
            paths or [settings.corpus],
            sync=sync,
            rebuild=rebuild,
            log=typer.echo,
            write_stage=_write_stage(engine, address),
        )
    except (
        FileNotFoundError,
        IndexMismatchError,
        IngestLockedError,
        IngestWriteError,
        StoreUnavailableError,
        ValueError,
    ) as error:
        _fail(str(error))
    else:
        if report.rejected:
            typer.secho(
                f"error: {len(report.rejected)} records rejected (listed above); "
                "the other papers were ingested",
                fg=typer.colors.RED,
                err=True,
            )
            raise typer.Exit(1)


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Address to bind (default 127.0.0.1).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default 8000).")] = None,
    chroma_url: ChromaUrl = None,
) -> None:
    """Run the API (/ask, /search) and the UI (/ui); starts vLLM unless SCHOLIA_LLM_URL is set.

    SIGINT, SIGTERM and SIGHUP stop it, and the vLLM it started, and exit 0."""
    from assistant.shutdown import Shutdown, StopRequested

    settings = _settings(chroma_url)
    try:
        with Shutdown() as shutdown, ExitStack() as stack:
            _serve(settings, host, port, shutdown, stack)
    except StopRequested as stop:
        typer.echo(f"Scholia {stop}; everything it started is stopped.", err=True)


def _serve(
    settings: Settings, host: str | None, port: int | None, shutdown: Shutdown, stack: ExitStack
) -> None:
    import uvicorn

    from assistant.api.main import create_app
    from assistant.api.services import build_services
    from assistant.engine import UnsupportedCpuError
    from assistant.warmup import StartupSteps
    from ingest.pipeline import IngestLockedError, open_store, run_ingest

    limit_malloc_arenas(settings.server.malloc_arenas)  # before the request threads start
    steps = StartupSteps()
    if open_store(settings).count() == 0:
        typer.echo(f"No index yet: ingesting {settings.corpus}")
        with steps.timed("ingest_s"):
            try:
                run_ingest(settings, [settings.corpus])
            except IngestLockedError as error:  # replicas starting together: one ingests
                typer.echo(f"{error} Serving what the index holds meanwhile.")
    if settings.llm.url:
        services = build_services(settings)
        engine = None
    else:
        try:
            with steps.timed("model_prepare_s"):
                vllm = _supervised_vllm(settings)
        except UnsupportedCpuError as error:
            _fail(str(error))
        stack.callback(vllm.stop)
        with steps.timed("vllm_ready_s"):
            vllm.start()
            services = build_services(settings)  # the embedder loads while vLLM starts
            vllm.wait_ready()
        vllm.watch()
        engine = vllm.profile.describe()
    app = create_app(settings, services, warm_up=settings.llm.warm_up, engine=engine, startup=steps)
    config = uvicorn.Config(
        app,
        host=host or settings.server.host,
        port=port or settings.server.port,
        timeout_keep_alive=settings.server.keep_alive_s,
        log_level="info",
    )
    shutdown.server = server = uvicorn.Server(config)
    server.run()


def limit_malloc_arenas(arenas: int) -> bool:
    """Cap glibc's malloc arenas (mallopt M_ARENA_MAX); False where there is no glibc."""
    import ctypes
    import ctypes.util

    if arenas <= 0 or not (libc_name := ctypes.util.find_library("c")):
        return False
    try:
        mallopt = ctypes.CDLL(libc_name).mallopt
    except (OSError, AttributeError):  # musl and others have no mallopt
        return False
    m_arena_max = -8
    return bool(mallopt(m_arena_max, arenas))


def _supervised_vllm(settings: Settings) -> VllmServer:
    from assistant.model_prep import prepare_model
    from assistant.vllm_server import VllmServer

    server = VllmServer(settings, prepare_model(settings))  # checks the CPU first
    typer.echo(f"Starting vLLM ({settings.llm.model}) on {settings.llm.host}:{settings.llm.port}…")
    return server


@app.command()
def ask(
    question: Annotated[str, typer.Argument(help="The question.")],
    top_k: Annotated[
        int | None,
        typer.Option(min=1, max=20, help="Sources to retrieve. Default: retrieval.top_k (5)."),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the /ask response object.")
    ] = False,
    start_llm: Annotated[
        bool,
        typer.Option(help="Start the packaged vLLM for this question (slow) if none is running."),
    ] = False,
) -> None:
    """Answer one question and print the answer with its sources."""
    from assistant.api.services import build_services
    from assistant.pipeline import AnswerUnavailableError
    from assistant.schemas import AskRequest

    settings = _settings()
    with ExitStack() as stack:
        services = build_services(settings)
        if start_llm and not settings.llm.url and not asyncio.run(services.llm.ping()):
            stack.enter_context(_supervised_vllm(settings))
        try:
            response = asyncio.run(
                services.assistant.ask(AskRequest(question=question, top_k=top_k))
            )
        except AnswerUnavailableError as error:
            typer.secho(f"error: {error}", fg=typer.colors.RED, err=True)
            typer.echo(
                "Start `scholia serve` (or pass --start-llm, or set SCHOLIA_LLM_URL).", err=True
            )
            for source in error.sources:
                typer.echo(f"  [{source.rank}] {source.title}", err=True)
            raise typer.Exit(3) from error
    if as_json:
        typer.echo(response.model_dump_json(indent=2))
        return
    typer.echo(response.answer)
    typer.echo("\nSources:")
    for source in response.sources:
        mark = "*" if source.cited else " "
        typer.echo(f" {mark}[{source.rank}] {source.title}  (score {source.score:.4f})")


@app.command()
def search(
    query: Annotated[str, typer.Argument(help="Search text.")],
    top_k: Annotated[
        int | None, typer.Option(min=1, max=20, help="Default: retrieval.top_k (5).")
    ] = None,
) -> None:
    """Show the best-matching papers without generating an answer."""
    from assistant.api.services import build_services

    services = build_services(_settings())
    for source in asyncio.run(services.assistant.search(query, top_k)):
        typer.echo(f"[{source.rank}] {source.title}  (score {source.score:.4f})")


@app.command("config")
def show_config() -> None:
    """Print the effective configuration (secrets masked) and the engine choices for this CPU."""
    from assistant.engine import UnsupportedCpuError, read_cpu, resolve_engine

    settings = get_settings()
    shown = settings.model_dump(mode="json")
    config_file = config_path()
    shown["config_file"] = str(config_file) if config_file else None
    cpu = read_cpu()
    try:
        shown["engine"] = resolve_engine(settings.llm, cpu).describe()
    except UnsupportedCpuError as error:
        shown["engine"] = {"cpu": cpu.describe(), "error": str(error)}
    typer.echo(json.dumps(shown, indent=2))


def _with_model(settings: Settings, model: str | None) -> Settings:
    if not model:
        return settings
    return settings.model_copy(update={"llm": settings.llm.model_copy(update={"model": model})})


@model_app.command("prepare")
def model_prepare(
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            help="Which packaged model (see `scholia model list`). Default: llm.model "
            "(SCHOLIA_LLM_MODEL), qwen2.5-coder-0.5b-instruct.",
        ),
    ] = None,
) -> None:
    """Assemble the packaged model, verify its checksum and convert it (once)."""
    from assistant.model_prep import prepare_model

    try:
        path = prepare_model(_with_model(get_settings(), model))
    except RuntimeError as error:
        _fail(str(error))
    else:
        typer.echo(f"model ready: {path}")
        if model and model != get_settings().llm.model:
            typer.echo(f"serve it with SCHOLIA_LLM_MODEL={model}")


@model_app.command("list")
def model_list() -> None:
    """The packaged models, which one llm.model selects, and which are prepared."""
    from assistant.model_prep import MODELS, read_marker

    settings = get_settings()
    for name, packaged in MODELS.items():
        chosen = "*" if name == settings.llm.model else " "
        ready = "prepared" if read_marker(settings.models_dir / name, packaged) else "not prepared"
        typer.echo(f"{chosen} {name}  ({ready}) {packaged.description}")
        typer.echo(f"    parts: {packaged.source}, installed by {packaged.install}")
        typer.echo(f"    sha256 of the GGUF: {packaged.gguf_sha256}")


def main() -> None:  # pragma: no cover
    sys.exit(app())


if __name__ == "__main__":  # pragma: no cover
    main()
