"""liqreplay: catalog, engines, replay, results."""
