"""liqreplay: results -> self-contained HTML report."""
