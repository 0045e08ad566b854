"""GET /metrics: the instance's Prometheus metrics in the text exposition format, without
authentication (they hold counts by bounded labels, nothing about a person). A full service
serves them on its HTTP port; `[metrics] port` opens a listener of their own, so that a
delivery-only process, which has no other HTTP, can be scraped too."""

from __future__ import annotations

from aiohttp import web

from dissemination.metrics import CONTENT_TYPE, Metrics

METRICS = web.AppKey("metrics", Metrics)


async def metrics_endpoint(request: web.Request) -> web.Response:
    """GET /metrics."""
    return web.Response(
        body=request.app[METRICS].exposition(), headers={"Content-Type": CONTENT_TYPE}
    )


def add_metrics_route(app: web.Application, metrics: Metrics) -> None:
    app[METRICS] = metrics
    app.router.add_get("/metrics", metrics_endpoint)


async def serve_metrics(metrics: Metrics, host: str, port: int) -> web.AppRunner:
    """A listener serving only GET /metrics on `host`:`port`; the caller cleans it up."""
    app = web.Application()
    add_metrics_route(app, metrics)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError:
        await runner.cleanup()
        raise
    return runner
