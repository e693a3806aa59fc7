# The third-party libraries every target links, as targets named amlnode::<name>.
#
# With AMLNODE_STATIC_DEPS (the default) the executables carry their libraries inside: each C
# library is linked from its static archive (with the archives it needs in turn, as pkg-config
# --static lists them), libstdc++ and libgcc statically, spdlog and fmt header-only. Only glibc stays
# shared, so NSS (getaddrinfo) and dlopen (NVML) keep working as they do for any program.
#
# Why: `amlnode run` is started once per job, and a dynamically linked amlnode maps 23 libraries
# (libarchive alone brings libxml2, ICU, ACL and five compressors). Binding their symbols and
# faulting in their pages was most of the start-up cost of a trivial run (docs/running.md,
# bench/run_overhead.py). Sanitizer builds and distributions that insist on shared libraries set
# AMLNODE_STATIC_DEPS=OFF and get the same targets from the shared libraries.

option(AMLNODE_STATIC_DEPS "Link third-party libraries and libstdc++ statically (fast start-up)" ON)

find_package(PkgConfig REQUIRED)
find_package(Threads REQUIRED)

# Libraries that always come from glibc; they stay shared even in a static-deps build.
set(AMLNODE_GLIBC_LIBRARIES m dl pthread rt c)

# amlnode_static_dependency(<name> <pkg-config module>...): amlnode::<name>, linking the static
# archives of the modules and of everything they list for static linking, in pkg-config's order.
# The archives are linked as one rescanned group, so the order between them cannot matter.
function(amlnode_static_dependency name)
  set(archives)
  set(system)
  foreach(module IN LISTS ARGN)
    execute_process(
      COMMAND ${PKG_CONFIG_EXECUTABLE} --static --libs-only-l ${module}
      OUTPUT_VARIABLE flags OUTPUT_STRIP_TRAILING_WHITESPACE RESULT_VARIABLE status)
    if(NOT status EQUAL 0)
      message(FATAL_ERROR "pkg-config cannot find ${module} (install its -dev package)")
    endif()
    separate_arguments(flags UNIX_COMMAND "${flags}")
    foreach(flag IN LISTS flags)
      string(REGEX REPLACE "^-l" "" library "${flag}")
      if(library IN_LIST AMLNODE_GLIBC_LIBRARIES)
        list(APPEND system ${library})
      elseif(NOT library STREQUAL flag)
        find_library(AMLNODE_ARCHIVE_${library} NAMES lib${library}.a REQUIRED NO_CACHE)
        list(APPEND archives ${AMLNODE_ARCHIVE_${library}})
      endif()
    endforeach()
  endforeach()
  list(REMOVE_DUPLICATES archives)
  list(REMOVE_DUPLICATES system)
  add_library(amlnode_dep_${name} INTERFACE)
  target_link_libraries(amlnode_dep_${name} INTERFACE
    "$<LINK_GROUP:RESCAN,${archives}>" ${system} Threads::Threads)
  add_library(amlnode::${name} ALIAS amlnode_dep_${name})
endfunction()

# amlnode_shared_dependency(<name> <target>...): amlnode::<name> for the shared libraries.
function(amlnode_shared_dependency name)
  add_library(amlnode_dep_${name} INTERFACE)
  target_link_libraries(amlnode_dep_${name} INTERFACE ${ARGN})
  add_library(amlnode::${name} ALIAS amlnode_dep_${name})
endfunction()

if(AMLNODE_STATIC_DEPS)
  # libarchive.pc names -lxml2 but not what libxml2 needs in turn (ICU), hence the second module.
  amlnode_static_dependency(archive libarchive libxml-2.0)
  amlnode_static_dependency(yaml yaml-cpp)
  amlnode_static_dependency(sqlite sqlite3)
  amlnode_static_dependency(ssl openssl)
  amlnode_static_dependency(nettle nettle)
  amlnode_static_dependency(ssh2 libssh2)
  find_package(fmt REQUIRED)
  find_package(spdlog REQUIRED)
  add_library(amlnode_dep_spdlog INTERFACE)
  target_compile_definitions(amlnode_dep_spdlog INTERFACE SPDLOG_FMT_EXTERNAL FMT_HEADER_ONLY=1)
  target_include_directories(amlnode_dep_spdlog INTERFACE
    $<TARGET_PROPERTY:spdlog::spdlog_header_only,INTERFACE_INCLUDE_DIRECTORIES>
    $<TARGET_PROPERTY:fmt::fmt-header-only,INTERFACE_INCLUDE_DIRECTORIES>)
  target_link_libraries(amlnode_dep_spdlog INTERFACE Threads::Threads)
  add_library(amlnode::spdlog ALIAS amlnode_dep_spdlog)
  # --gc-sections drops the parts of the static archives nothing calls. libarchive's format table,
  # for one, would otherwise pull in its xar writer, libxml2 and ICU's 30 MB of data.
  add_link_options(-static-libstdc++ -static-libgcc -Wl,--gc-sections)
else()
  find_package(LibArchive REQUIRED)
  find_package(yaml-cpp REQUIRED)
  find_package(SQLite3 REQUIRED)
  find_package(OpenSSL REQUIRED)
  find_package(spdlog REQUIRED)
  pkg_check_modules(NETTLE REQUIRED IMPORTED_TARGET nettle)
  pkg_check_modules(LIBSSH2 REQUIRED IMPORTED_TARGET libssh2)
  amlnode_shared_dependency(archive LibArchive::LibArchive)
  amlnode_shared_dependency(yaml yaml-cpp)
  amlnode_shared_dependency(sqlite SQLite::SQLite3)
  amlnode_shared_dependency(ssl OpenSSL::SSL OpenSSL::Crypto)
  amlnode_shared_dependency(nettle PkgConfig::NETTLE)
  amlnode_shared_dependency(ssh2 PkgConfig::LIBSSH2)
  amlnode_shared_dependency(spdlog spdlog::spdlog)
endif()
