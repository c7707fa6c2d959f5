"""The run report: one self-contained HTML page per run directory (``qwen35-tune report RUN_DIR``, and written by
``train`` at the end of every run), and a page that puts several runs side by side.

Read through ``RunDir`` (collect) -> plain values per section (``view``, ``*_view``) -> HTML (``page``, templates/).
Nothing heavy is imported here: the CLI and the training hook import what they use.
"""
