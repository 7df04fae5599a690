"""Builds pagedinfer._C with CMake + ninja; setup.py only drives CMake (see CMakeLists.txt).

Environment:
  PAGEDINFER_CUDA=0|1|auto   build the CUDA kernels (auto: when PyTorch has CUDA and nvcc is found)
  CUDA_HOME                  CUDA toolkit root (default /usr/local/cuda when it exists)
  TORCH_CUDA_ARCH_LIST       e.g. "8.0;9.0" (default 8.0;8.6;8.9;9.0)
  MAX_JOBS                   parallel compile jobs (default: the number of CPUs)
  PAGEDINFER_BUILD_DIR       CMake build folder (default build/<python tag>); kept between builds,
                             so a second install only recompiles what changed
"""
import os
import shutil
import subprocess
import sys
from pathlib import Path

from setuptools import Extension, find_packages, setup
from setuptools.command.build_ext import build_ext

ROOT = Path(__file__).resolve().parent


class CMakeExtension(Extension):
    def __init__(self, name: str):
        super().__init__(name, sources=[])


def _tool(name: str) -> str:
    """Prefer the tool installed next to this Python (pip's cmake/ninja), then PATH."""
    local = Path(sys.executable).parent / name
    found = str(local) if local.exists() else shutil.which(name)
    if not found:
        raise RuntimeError(f"pagedinfer build: '{name}' not found; pip install {name}")
    return found


class CMakeBuild(build_ext):
    def build_extension(self, ext: CMakeExtension) -> None:
        import torch

        out_dir = Path(self.get_ext_fullpath(ext.name)).resolve().parent
        out_dir.mkdir(parents=True, exist_ok=True)
        tag = f"py{sys.version_info.major}{sys.version_info.minor}"
        build_dir = Path(os.environ.get("PAGEDINFER_BUILD_DIR", ROOT / "build" / tag))
        build_dir.mkdir(parents=True, exist_ok=True)

        cuda_mode = os.environ.get("PAGEDINFER_CUDA", "auto")
        cuda_home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
        if not cuda_home and Path("/usr/local/cuda/bin/nvcc").exists():
            cuda_home = "/usr/local/cuda"
        args = [
            f"-DCMAKE_BUILD_TYPE={os.environ.get('PAGEDINFER_BUILD_TYPE', 'Release')}",
            f"-DCMAKE_PREFIX_PATH={torch.utils.cmake_prefix_path}",
            f"-DPython_EXECUTABLE={sys.executable}",
            f"-DCMAKE_LIBRARY_OUTPUT_DIRECTORY={out_dir}",
            f"-DPAGEDINFER_CUDA={cuda_mode}",
            f"-DPAGEDINFER_TORCH_HAS_CUDA={'ON' if torch.version.cuda else 'OFF'}",
            f"-DCMAKE_MAKE_PROGRAM={_tool('ninja')}",
        ]
        nvidia_libs = sorted(str(p) for p in Path(torch.__file__).parent.parent.glob("nvidia/*/lib"))
        if nvidia_libs:
            args.append(f"-DPAGEDINFER_EXTRA_LIB_DIRS={';'.join(nvidia_libs)}")
        env = dict(os.environ)
        if cuda_home and Path(cuda_home, "bin", "nvcc").exists():
            # PyTorch's helpers and CMake would otherwise take the first nvcc on PATH.
            args += [f"-DCMAKE_CUDA_COMPILER={cuda_home}/bin/nvcc", f"-DCUDAToolkit_ROOT={cuda_home}",
                     f"-DCUDA_TOOLKIT_ROOT_DIR={cuda_home}"]
            env["CUDA_HOME"] = cuda_home
        elif cuda_mode.lower() in ("1", "on"):
            raise RuntimeError(
                "PAGEDINFER_CUDA=1 but no nvcc was found: set CUDA_HOME to the CUDA toolkit root "
                "(the folder with bin/nvcc), or build with PAGEDINFER_CUDA=0"
            )
        jobs = os.environ.get("MAX_JOBS", str(os.cpu_count() or 1))
        cmake = _tool("cmake")
        subprocess.run([cmake, "-S", str(ROOT), "-B", str(build_dir), "-G", "Ninja", *args],
                       check=True, env=env)
        # Keep the compiler's output (ptxas register and spill lines included) in build.log.
        with open(build_dir / "build.log", "w") as log:
            proc = subprocess.Popen([cmake, "--build", str(build_dir), "-j", jobs], env=env,
                                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
            for line in proc.stdout:
                sys.stdout.write(line)
                log.write(line)
            if proc.wait() != 0:
                raise RuntimeError(f"pagedinfer build failed; see {build_dir / 'build.log'}")


setup(
    packages=find_packages("python"),
    package_dir={"": "python"},
    ext_modules=[CMakeExtension("pagedinfer._C")],
    cmdclass={"build_ext": CMakeBuild},
)
