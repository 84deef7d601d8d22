"""The names a user chooses from (samplers, performance presets, dtypes), in a module that imports nothing.

The CLI, the app and the doctor build their flags from these before they import torch, so that `--help` and argument
errors take a fraction of a second; `wan_t2i.samplers`, `wan_t2i.performance` and `wan_t2i.loading` use the same
names (tests/test_cli.py checks that they agree).
"""

# The samplers `wan_t2i.samplers` implements (it imports this tuple: one definition), each with a line on what it is
# for, shown by the CLI's --help and the app's labels; docs/samplers.md has the table.
SAMPLER_NOTES = {
    "flow_unipc": "Wan's flow UniPC (its default)",
    "flow_dpmpp": "Wan's second solver (dpm++)",
    "flow_euler": "flow Euler (first order)",
    "flow_lcm": "few-step students (LCM: fresh noise each step)",
    "legacy_ddim": "the original loop (reads velocity as noise)",
}
SAMPLERS = tuple(SAMPLER_NOTES)
PRESETS = ("default", "fastest", "low_memory", "fp8")  # the keys of `wan_t2i.performance.PRESETS`
DTYPES = ("bf16", "fp16", "fp32")  # what `wan_t2i.loading.parse_dtype` reads (it also takes the long names)


def device_list(device: str | None, devices: str | None) -> list[str] | None:
    """The CLI's and the app's --devices ("cuda:0, cuda:1") as a list, None without it; ValueError, in one line,
    where --device is given too."""
    if not devices:
        return None
    if device:
        raise ValueError("give --device or --devices, not both: the model loads on the first of --devices")
    return [d.strip() for d in devices.split(",") if d.strip()]
