"""Why do AOTInductor packages crash on loading on this CUDA machine? Nothing of this project's is imported: one
`torch.nn.Linear`, exported and packaged by PyTorch alone, then loaded in fresh processes in several ways, with the
native stack of a crash (gdb, where the machine has it) and what the package's shared library links against.

    PYTHONUNBUFFERED=1 python -m benchmarks.aoti_bare [--variants A,B] [--deep] [--bindings] [--out FILE]

Variants (built in parallel, each loaded in a fresh process): AOTInductor's defaults; its library linked with
`-Bsymbolic` (the library's std::regex code then binds to its own copies, not to those libtorch exports); compiled
as C++20 (PyTorch's own standard); both; and the package built and loaded on the CPU (does loading work at all
here?). `--deep`: the defaults' library also loaded in every other way: with CUDA_LAUNCH_BLOCKING, opened
alone with `ctypes` (its static initialisers), run by the C++ runner without the package loader
(`torch._C._aoti.AOTIModelContainerRunnerCuda`), with the runner's native stack, with the machine's own libstdc++
preloaded, with triton kept out of the process; and which mapped libraries carry a C++ runtime of their own.
`--bindings`: the dynamic linker's log (LD_DEBUG) of where the defaults' std::regex symbols were bound. Also the
older, package-less path (`torch._export.aot_compile` + `torch._export.aot_load`) unless `--no-legacy`.

On an H100 with torch 2.11.0+cu130 (benchmarks/records/2026-12-07-h100-aoti-bare): the defaults, and kernels
embedded in the library (`aot_inductor.embed_kernel_binary`), both crashed with SIGSEGV in `_load_aoti`; the native
stack ends in `parse_device_str`'s std::regex. A package linked with `-Bsymbolic` crashed the same way
(benchmarks/records/2026-12-07-h100-pair-sweep-floors, aoti_cuda.json, built while wan_t2i.aot linked so).
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

BUILD = """
import sys, torch
from torch._inductor import cpp_builder
device, options, path, flags = sys.argv[1], eval(sys.argv[2]), sys.argv[3], eval(sys.argv[4])
if flags.get("std"):  # the C++ standard the library is compiled for (PyTorch's own was built for C++20)
    cpp_builder._get_cpp_std_cflag = lambda std_num=None: [f"std={flags['std']}"]
print("std", cpp_builder._get_cpp_std_cflag(), flush=True)
original = cpp_builder._get_optimization_cflags  # PyTorch has no option for extra link flags: this returns them
def with_flags(*args, **kwargs):
    cflags, ldflags = original(*args, **kwargs)
    return cflags, [*ldflags, *flags.get("link", ())]
cpp_builder._get_optimization_cflags = with_flags
if True:
    model = torch.nn.Linear(64, 64).to(device)
    example = (torch.randn(8, 64, device=device),)
    program = torch.export.export(model, example)
    print(torch._inductor.aoti_compile_and_package(program, package_path=path, inductor_configs=options))
"""
LOAD = """
import faulthandler, sys, torch
faulthandler.enable()
device, path = sys.argv[1], sys.argv[2]
print("loading", flush=True)
runner = torch._inductor.aoti_load_package(path)
print("loaded", flush=True)
out = runner(torch.randn(8, 64, device=device))
print("ran", tuple(out.shape), flush=True)
"""
LEGACY = """
import faulthandler, sys, torch
faulthandler.enable()
model = torch.nn.Linear(64, 64).cuda()
example = (torch.randn(8, 64, device="cuda"),)
so = torch._export.aot_compile(model, example)
print("built", so, flush=True)
runner = torch._export.aot_load(so, "cuda")
print("loaded", flush=True)
print("ran", tuple(runner(*example).shape), flush=True)
"""
DLOPEN = """
import ctypes, faulthandler, sys, torch
faulthandler.enable()
print("dlopen", flush=True)
ctypes.CDLL(sys.argv[1])
print("opened", flush=True)
"""
RUNNER = """
import faulthandler, sys, torch
faulthandler.enable()
print("runner", flush=True)
runner = torch._C._aoti.AOTIModelContainerRunnerCuda(sys.argv[1], 1, "cuda", sys.argv[2])
print("constructed", flush=True)
print("ran", tuple(runner.run([torch.randn(8, 64, device="cuda")])[0].shape), flush=True)
"""
# A SIGSEGV handler preloaded into the runner's process, printing the native stack with glibc's backtrace (the
# machine may have no gdb; Python's faulthandler shows only the Python frames). Built with the machine's gcc.
BACKTRACE_C = r"""
#include <execinfo.h>
#include <signal.h>
#include <unistd.h>
static void on_segv(int sig) { void *frames[64]; int n = backtrace(frames, 64); backtrace_symbols_fd(frames, n, 2);
                               _exit(128 + sig); }
__attribute__((constructor)) static void install(void) { signal(SIGSEGV, on_segv); }
"""
# Which of the process's mapped libraries define C++ runtime symbols of their own (std::locale, libstdc++'s regex
# traits): a second C++ runtime in the process (a library that links libstdc++ statically and exports it) is one way
# the package's std::regex code could meet objects of another layout.
MAPS = """
import re, subprocess
def cxx_runtimes():
    paths = sorted({line.split()[-1] for line in open("/proc/self/maps") if ".so" in line.split()[-1]})
    found = {}
    for path in paths:
        out = subprocess.run(["nm", "-D", "--defined-only", path], capture_output=True, text=True).stdout
        names = [n for n in ("_ZNSt6locale7classicEv", "_ZNSt5ctypeIcE2idE", "_ZNSt6locale2id11_S_refcountE",
                             "_ZNKSt7collateIcE9transformEPKcS2_") if n in out]
        if names:
            found[path] = names
    return found
"""
ENV = (
    MAPS
    + """
import torch, sys
print("torch", torch.__version__, "cuda", torch.version.cuda, "cxx11abi", torch._C._GLIBCXX_USE_CXX11_ABI)
print("device", torch.cuda.is_available() and (torch.cuda.get_device_name(), torch.cuda.get_device_capability()))
print("python", sys.version.split()[0])
print("built with", [line.strip() for line in torch.__config__.show().splitlines()[1:3]])
print("C++ runtimes after import torch", cxx_runtimes())
import torch._inductor.package
print("C++ runtimes after the package loader's import", cxx_runtimes())
try:
    import triton
    print("C++ runtimes after import triton", triton.__version__, cxx_runtimes())
except ImportError as error:
    print("no triton", error)
"""
)


# The defaults' package loaded in other processes, to tell what in the process the crash depends on:
LOADS = {
    # the machine's g++ runtime first, before the runtime torch or any other library brings
    "load_preloaded_libstdcxx": ("", "libstdc++"),
    # triton (and what it links) kept out of the process: the loader does not need it
    "load_without_triton": ("import sys; sys.modules['triton'] = None\n", ""),
    # the C++ runtimes mapped when the loader is called, printed first
    "load_runtimes": (MAPS + "print('runtimes', cxx_runtimes(), flush=True)\n", ""),
}


def run(args: list[str], timeout: float = 300, env: dict | None = None) -> dict:
    """One fresh process: its return code (negative: the signal), and the tails of its output."""
    import os

    try:
        done = subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=os.environ | (env or {}))
    except subprocess.TimeoutExpired:
        return {"rc": "timeout"}
    return {"rc": done.returncode, "stdout": done.stdout[-3000:], "stderr": done.stderr[-6000:]}


def python(code: str, *args: str, **kw) -> dict:
    return run([sys.executable, "-c", textwrap.dedent(code), *args], **kw)


def library_facts(package: Path, folder: Path) -> dict:
    """The package's files, and what its shared libraries need (ldd) that the loader might not find."""
    import zipfile

    facts: dict = {}
    with zipfile.ZipFile(package) as archive:
        facts["files"] = archive.namelist()
        archive.extractall(folder)
    for so in folder.rglob("*.so"):
        if shutil.which("ldd"):
            facts[f"ldd {so.name}"] = run(["ldd", str(so)], timeout=30).get("stdout", "")
    return facts


def native_stack(tmp: Path, library: Path) -> dict:
    """The runner again, with BACKTRACE_C preloaded and faulthandler off (it would take the signal first)."""
    source, handler = tmp / "backtrace.c", tmp / "backtrace.so"
    source.write_text(BACKTRACE_C)
    built = run(["gcc", "-shared", "-fPIC", "-O0", "-o", str(handler), str(source)], timeout=60)
    if not handler.exists():
        return {"gcc": built}
    code = RUNNER.replace("faulthandler.enable()", "")
    result = python(code, str(library), str(library.parent), env={"LD_PRELOAD": str(handler)})
    if shutil.which("addr2line"):  # name the frames that backtrace could only give as library + offset
        frames = re.findall(r"^(/[^(\s]+)\(\+(0x[0-9a-f]+)\)", result.get("stderr", ""), re.M)
        result["frames"] = [
            f"{Path(lib).name} {offset}: "
            + " ".join(run(["addr2line", "-f", "-C", "-e", lib, offset], timeout=30).get("stdout", "").split())
            for lib, offset in frames[:30]
        ]
    return result


def regex_bindings(tmp: Path, library: Path) -> dict:
    """The runner with the dynamic linker's binding log (LD_DEBUG=bindings): which library each std::regex symbol
    the package's library uses was bound to, its own copy or one another library exports."""
    log = tmp / "bindings"
    result = python(
        RUNNER, str(library), str(library.parent), env={"LD_DEBUG": "bindings", "LD_DEBUG_OUTPUT": str(log)}
    )
    lines = [line.split(":", 1)[-1].strip() for f in tmp.glob("bindings*") for line in f.read_text().splitlines()]
    wanted = [
        line for line in lines if library.name in line.split(" to ")[0] and ("regex" in line or "_Compiler" in line)
    ]
    result["regex_bindings"] = wanted[:60]
    result["regex_bound_elsewhere"] = sum(1 for line in wanted if library.name not in line.split(" to ")[-1])
    return result


# name: (device, inductor options, build flags: "link" (linker flags, added where cpp_builder takes its own), "std")
VARIANTS = {
    "cuda_defaults": ("cuda", {}, {}),
    "cuda_bsymbolic": ("cuda", {}, {"link": ["Wl,-Bsymbolic"]}),
    "cuda_cxx20": ("cuda", {}, {"std": "c++20"}),
    "cuda_cxx20_bsymbolic": ("cuda", {}, {"std": "c++20", "link": ["Wl,-Bsymbolic"]}),
    "cpu_defaults": ("cpu", {}, {}),
    # PyTorch 2.11's own build is C++17 (torch.__config__.show() on the H100 machine); AOTInductor compiles C++20
    "cuda_cxx17": ("cuda", {}, {"std": "c++17"}),
    "cpu_cxx17": ("cpu", {}, {"std": "c++17"}),
    # the library with a C++ runtime of its own, linked in: its std::regex meets only its own runtime's objects
    "cuda_static_libstdcxx": ("cuda", {}, {"link": ["static-libstdc++"]}),
    "cpu_static_libstdcxx": ("cpu", {}, {"link": ["static-libstdc++"]}),
}


def probe(tmp: Path, name: str, deep: bool, bindings: bool, loads: bool = False) -> dict:
    """Build variant `name`'s package in a fresh process and load it in another; `deep`: the ways to load its library
    one by one (the C++ runner alone, its native stack, gdb where there is one, and LOADS); `bindings`: the linker's
    log; `loads`: LOADS alone."""
    device, options, flags = VARIANTS[name]
    path = tmp / f"{name}.pt2"
    result = {"build": python(BUILD, device, repr(options), str(path), repr(flags), timeout=150)}
    if not path.exists():
        return result
    result["load"] = python(LOAD, device, str(path))
    result["package"] = library_facts(path, tmp / name)
    library = next((tmp / name).rglob("*.so"))
    if bindings:
        result["bindings"] = regex_bindings(tmp, library)
    if (deep or loads) and result["load"].get("rc") != 0:
        for way, (prefix, preload) in LOADS.items():
            env = None
            if preload:
                found = run(["g++", "-print-file-name=libstdc++.so.6"], timeout=30).get("stdout", "").strip()
                env = {"LD_PRELOAD": str(Path(found).resolve())} if found else None
            result[way] = python(prefix + textwrap.dedent(LOAD), device, str(path), env=env) | {"env": env}
    if deep and device == "cuda":
        result["load_blocking"] = python(LOAD, device, str(path), env={"CUDA_LAUNCH_BLOCKING": "1"})
        result["dlopen"] = python(DLOPEN, str(library))  # the library alone: its static initialisers
        result["runner"] = python(RUNNER, str(library), str(library.parent))  # without the package loader
        if shutil.which("gcc"):
            result["runner_native_stack"] = native_stack(tmp, library)
        if shutil.which("gdb"):
            script = tmp / "load.py"
            script.write_text(LOAD)
            gdb = ["gdb", "-batch", "-ex", "run", "-ex", "bt 40", "--args", sys.executable, str(script)]
            result["gdb"] = run(gdb + [device, str(path)], timeout=300)
    return result


def main() -> None:
    from concurrent.futures import ThreadPoolExecutor

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="aoti_bare.json")
    parser.add_argument("--cuda-only", action="store_true", help="leave out the CPU package")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"of {', '.join(VARIANTS)}")
    parser.add_argument("--deep", action="store_true", help="also load cuda_defaults' library in every other way")
    parser.add_argument("--bindings", action="store_true", help="log cuda_defaults' std::regex bindings (slow)")
    parser.add_argument("--loads", action="store_true", help="every variant that crashed loaded again in the other "
                        "ways of LOADS (the machine's libstdc++ preloaded, triton kept out)")  # fmt: skip
    parser.add_argument("--no-legacy", action="store_true", help="leave out the package-less path")
    args = parser.parse_args()
    report: dict = {"env": python(ENV, timeout=60)}
    for tool in ("nvidia-smi", "gcc", "g++"):
        if shutil.which(tool):
            report[tool] = run([tool, "--version"] if tool != "nvidia-smi" else [tool], timeout=30).get("stdout", "")
    tmp = Path(tempfile.mkdtemp())
    names = [n for n in args.variants.split(",") if not (args.cuda_only and VARIANTS[n][0] == "cpu")]

    def one(name: str) -> None:  # variants build in parallel: each compile is one process of its own
        defaults = name == "cuda_defaults"
        report[name] = result = probe(tmp, name, args.deep and defaults, args.bindings and defaults, args.loads)
        print(name, {k: v.get("rc") for k, v in result.items() if isinstance(v, dict) and "rc" in v}, flush=True)
        Path(args.out).write_text(json.dumps(report, indent=1))

    with ThreadPoolExecutor(len(names) or 1) as pool:
        list(pool.map(one, names))
    if not args.no_legacy:
        report["legacy_so"] = python(LEGACY)
        print("legacy_so", report["legacy_so"].get("rc"), flush=True)
    Path(args.out).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
