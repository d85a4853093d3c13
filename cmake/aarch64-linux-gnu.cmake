# Cross build of everything for aarch64 (Debian g++-aarch64-linux-gnu) against Debian bookworm's
# arm64 packages installed through multiarch (dpkg --add-architecture arm64; scripts/install-deps.sh):
# their headers and libraries live in the aarch64-linux-gnu multiarch folders beside the host's.
# protoc and grpc_cpp_plugin come from the host. The binaries link dynamically and run under
# qemu-aarch64 with the arm64 loader and libraries of this root (-L /).
set(CMAKE_SYSTEM_NAME Linux)
set(CMAKE_SYSTEM_PROCESSOR aarch64)
set(CMAKE_C_COMPILER aarch64-linux-gnu-gcc)
set(CMAKE_CXX_COMPILER aarch64-linux-gnu-g++)
set(CMAKE_LIBRARY_ARCHITECTURE aarch64-linux-gnu)
set(CMAKE_FIND_ROOT_PATH /usr/aarch64-linux-gnu /)
set(CMAKE_FIND_ROOT_PATH_MODE_PROGRAM NEVER)
set(CMAKE_FIND_ROOT_PATH_MODE_LIBRARY ONLY)
set(CMAKE_FIND_ROOT_PATH_MODE_INCLUDE BOTH)
set(CMAKE_FIND_ROOT_PATH_MODE_PACKAGE ONLY)
# Only the arm64 .pc files (pkg-config would otherwise offer the host's).
set(ENV{PKG_CONFIG_LIBDIR} /usr/lib/aarch64-linux-gnu/pkgconfig:/usr/share/pkgconfig)
set(ENV{PKG_CONFIG_PATH} "")
set(CMAKE_CROSSCOMPILING_EMULATOR qemu-aarch64 -L /)
