"""The report: verdict, tables, figures and the metrics files, drawn from stage outputs only.

``comparisons`` (paired statistics), ``tables`` (content), ``figures`` and ``display`` (pictures), ``document``
(Markdown / HTML rendering), ``build`` (assembles the files the report stage writes).
"""
