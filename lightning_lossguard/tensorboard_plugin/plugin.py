"""``LossGuardPlugin``: the ``lossguard`` TensorBoard plugin, its routes, and when its tab shows.

Routes, under ``/data/plugin/lossguard``:

- ``/index.js``, ``/style.css``: the page, an ES module TensorBoard loads in an iframe (package files, no
  network);
- ``/runs``: the runs with LossGuard data, ``{"runs": [name, ...]}``;
- ``/run?run=NAME``: one run's verdict, diagnoses (cause first), notes, coverage gaps and curves
  (:func:`~lightning_lossguard.tensorboard_plugin.run_data.run_view`);
- ``/catalog.html``: every diagnosis code with an anchor each (``catalog.html#exploding_gradients``).

A run has LossGuard data when it has ``lossguard/`` scalars or its directory holds a LossGuard report. The tab
shows as soon as one run has. Scalars are read through TensorBoard's data provider, so the page follows a live
run as TensorBoard loads its events; reports are read from disk on each request.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tensorboard import context as tb_context
from tensorboard import errors, plugin_util
from tensorboard.backend import http_util
from tensorboard.plugins import base_plugin
from tensorboard.plugins.scalar.metadata import PLUGIN_NAME as SCALARS
from werkzeug import Request, Response

from lightning_lossguard.tensorboard_plugin.catalog_page import catalog_page
from lightning_lossguard.tensorboard_plugin.run_data import PREFIX, read_curves, report_files, run_view

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIApplication as WSGIApp

PLUGIN_NAME = "lossguard"
_FILES = {"/index.js": ("index.js", "text/javascript"), "/style.css": ("style.css", "text/css")}


class LossGuardPlugin(base_plugin.TBPlugin):  # type: ignore[misc]
    """The LossGuard tab: per run, the verdict, the diagnoses as cards and the curves with their markers."""

    plugin_name = PLUGIN_NAME

    def __init__(self, context: Any) -> None:
        self._provider = context.data_provider
        self._multiplexer = context.multiplexer
        self._logdir = context.logdir or ""
        self._active = False

    def get_plugin_apps(self) -> dict[str, WSGIApp]:
        apps: dict[str, WSGIApp] = {route: _static(*file) for route, file in _FILES.items()}
        apps["/runs"] = Request.application(self._serve_runs)
        apps["/run"] = Request.application(self._serve_run)
        apps["/catalog.html"] = Request.application(_serve_catalog)
        return apps

    def is_active(self) -> bool:
        if not self._active:  # once a run has LossGuard data, the tab stays
            self._active = bool(self.runs(tb_context.RequestContext(), ""))
        return self._active

    def frontend_metadata(self) -> Any:
        return base_plugin.FrontendMetadata(es_module_path="/index.js", tab_name="LossGuard")

    def runs(self, ctx: Any, experiment: str) -> list[str]:
        """The runs with ``lossguard/`` scalars or a LossGuard report in their directory, by name."""
        names = [run.run_name for run in self._provider.list_runs(ctx, experiment_id=experiment)]
        listed = self._provider.list_scalars(ctx, experiment_id=experiment, plugin_name=SCALARS)
        with_scalars = {run for run, tags in listed.items() if any(t.startswith(PREFIX) for t in tags)}
        return sorted(n for n in names if n in with_scalars or report_files(self._run_dir(n)))

    def _run_dir(self, run: str) -> Path | None:
        """The run's directory on this machine; None for remote log directories (no report is read there)."""
        if self._multiplexer is not None:  # TensorBoard's Python loader knows each run's path
            path = self._multiplexer.RunPaths().get(run)
        else:
            path = str(Path(self._logdir) / run) if self._logdir else None
        return Path(path) if path and Path(path).is_dir() else None

    def _serve_runs(self, request: Request) -> Response:
        ctx, experiment = plugin_util.context(request.environ), plugin_util.experiment_id(request.environ)
        return _respond(request, {"runs": self.runs(ctx, experiment)}, "application/json")

    def _serve_run(self, request: Request) -> Response:
        ctx, experiment = plugin_util.context(request.environ), plugin_util.experiment_id(request.environ)
        run = request.args.get("run", "")
        # Only a name TensorBoard lists ever reaches a path.
        listed = any(r.run_name == run for r in self._provider.list_runs(ctx, experiment_id=experiment))
        view = run_view(run, self._run_dir(run), read_curves(self._provider, ctx, experiment, run)) if listed else None
        if view is None or not (view["reports"] or view["curves"]):
            raise errors.NotFoundError(f"no LossGuard data for run {run!r}")
        return _respond(request, view, "application/json")


def _serve_catalog(request: Request) -> Response:
    return _respond(request, catalog_page(), "text/html")


def _static(name: str, content_type: str) -> WSGIApp:
    def serve(request: Request) -> Response:
        data = resources.files(__package__).joinpath("static", name).read_bytes()
        return _respond(request, data, content_type)

    return Request.application(serve)


def _respond(request: Request, content: Any, content_type: str) -> Response:
    """TensorBoard's response: compression, no caching, and its Content-Security-Policy on HTML."""
    response: Response = http_util.Respond(request, content, content_type)
    return response
