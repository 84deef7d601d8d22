"""The names a user chooses from (samplers, performance presets, dtypes), in a module that imports nothing.

The CLI, the app and the doctor build their flags from these before they import torch, so that `--help` and argument
errors take a fraction of a second; `wan_t2i.samplers`, `wan_t2i.performance` and `wan_t2i.loading` use the same
names (tests/test_cli.py checks that they agree).
"""

# the samplers `wan_t2i.samplers` implements
SAMPLERS = ("flow_unipc", "flow_dpmpp", "flow_euler", "flow_lcm", "legacy_ddim")
PRESETS = ("default", "fastest", "low_memory", "fp8")  # the keys of `wan_t2i.performance.PRESETS`
DTYPES = ("bf16", "fp16", "fp32")  # what `wan_t2i.loading.parse_dtype` reads (it also takes the long names)
