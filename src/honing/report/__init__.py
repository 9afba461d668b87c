"""The report of a run: a summary for `dvc exp show`, and one HTML page to look at.

    load      what a project folder holds: metrics, dvclive curves, evaluation rows
    summary   the figures a person compares across experiments (metrics/summary.json)
    samples   refinements side by side, chosen by what refinement did to them
    svg       two kinds of chart as inline SVG
    page      the self-contained page (report/index.html)
"""
