"""Data: the on-disk formats and converters (formats/), the streaming input pipeline
(pipeline/), and generated data (synthetic/). The command line is __main__.py."""
