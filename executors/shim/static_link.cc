// The shim is linked fully statically (see CMakeLists.txt): no dynamic loader, no shared libc
// mapped, about half the resident memory of the dynamically linked build.
//
// libuv's core object refers to getpwuid_r (for uv_os_get_passwd and uv_os_homedir, which the shim
// never calls). glibc's static getpwuid_r would load NSS modules at run time, so the linker warns
// about it. The shim never looks up users, so this definition takes its place: it finds no one.

#include <pwd.h>

#include <cerrno>

extern "C" int getpwuid_r(uid_t, struct passwd*, char*, size_t, struct passwd** result) {
  *result = nullptr;
  return ENOENT;
}
