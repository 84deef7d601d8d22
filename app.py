"""The Gradio demo's entry point: `python app.py [flags]` here (as `wan-t2i-app` once installed), and a Hugging Face
Space's app file.

Everything lives in `wan_t2i.app`; importing this file loads no model, except on a Space (env SPACE_ID), where
ZeroGPU wants the pipeline built at import.
"""

import os

from wan_t2i.app import build, create_demo, main, parse_args

if __name__ == "__main__":
    main()  # parses the flags before torch and Gradio load: `python app.py --help` is instant
else:
    from wan_t2i.zerogpu import GPU_BASE_SECONDS, GPU_MAX_SECONDS, gpu_seconds

    __all__ = ["GPU_BASE_SECONDS", "GPU_MAX_SECONDS", "create_demo", "gpu_seconds", "main", "parse_args"]
    if os.environ.get("SPACE_ID"):
        demo = build([])
