"""HTML pages of the pipeline (run report, backtest report) from the Jinja2 templates shipped
in `jobs/templates/`: every value is HTML-escaped, and a name the template uses but the caller
did not pass is an error, not an empty cell."""

from __future__ import annotations

from functools import cache


@cache
def _environment():
    import jinja2

    return jinja2.Environment(
        loader=jinja2.PackageLoader("jobs", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render(template: str, **context) -> str:
    """`jobs/templates/<template>` rendered with `context`."""
    return _environment().get_template(template).render(**context)
