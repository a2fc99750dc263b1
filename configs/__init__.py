"""The run configs: pretrain.py and one <task>.py per fine-tuning task, each get_config(preset).

Loaded by path (`--config=configs/<file>.py:<preset>`); installed from a wheel they ship as
unimo_jax/configs and that command line finds them from any directory (unimo_jax/main.py).
"""
