#!/bin/sh
# Install into a staging prefix, then build and run a program against it the
# way a user would: pkg-config flags, shared library found through the soname.
# Also checks the ABI rules: only env2_* symbols exported, soname = major.
# Usage: test_install.sh BUILD_DIR (run from the repository root by make test).
pass=0; fail=0
ok() { pass=$((pass + 1)); }
bad() { fail=$((fail + 1)); echo "FAIL: $*" >&2; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
make -s install PREFIX="$tmp/prefix" >"$tmp/install.log" 2>&1 && ok || { bad "make install"; cat "$tmp/install.log" >&2; }
lib=$(ls "$tmp"/prefix/lib/libefficientnetv2.so.*.*.* 2>/dev/null | head -n 1)
[ -n "$lib" ] && ok || bad "shared library not installed"
[ -f "$tmp/prefix/include/efficientnetv2.h" ] && ok || bad "header not installed"
[ -f "$tmp/prefix/lib/libefficientnetv2.a" ] && ok || bad "static library not installed"
pc="$tmp/prefix/lib/pkgconfig/efficientnetv2.pc"
[ -f "$pc" ] && ok || bad "efficientnetv2.pc not installed"
ver=$(sed -n 's/^#define ENV2_VERSION_STRING "\(.*\)"/\1/p' include/efficientnetv2.h)
grep -q "^Version: $ver\$" "$pc" && ok || bad "pkg-config version differs from the header's $ver"
grep -q "^prefix=$tmp/prefix\$" "$pc" && ok || bad "pkg-config prefix is not the install prefix"
if [ -n "$lib" ]; then
    soname=$(readelf -d "$lib" | sed -n 's/.*SONAME.*\[\(.*\)\]/\1/p')
    [ "$soname" = "libefficientnetv2.so.${ver%%.*}" ] && ok || bad "soname is '$soname'"
    others=$(nm -D --defined-only "$lib" | awk '{print $3}' | grep -v '^env2_' | grep -v '^_' )
    [ -z "$others" ] && ok || bad "symbols exported without the env2_ prefix: $(echo $others | head -c 300)"
    nm -D --defined-only "$lib" | awk '{print $3}' | grep '^env2_' | sort > "$tmp/syms"
    if diff -u lib/efficientnetv2.sym "$tmp/syms" >"$tmp/symdiff"; then ok; else bad "exported symbols differ from lib/efficientnetv2.sym"; cat "$tmp/symdiff" >&2; fi
fi
if command -v pkg-config >/dev/null 2>&1; then
    flags=$(PKG_CONFIG_PATH="$tmp/prefix/lib/pkgconfig" pkg-config --cflags --libs efficientnetv2)
    if ${CC:-cc} examples/classify.c $flags -o "$tmp/classify" 2>"$tmp/cc.log"; then ok; else bad "compiling against the installed library"; cat "$tmp/cc.log" >&2; fi
    out=$(LD_LIBRARY_PATH="$tmp/prefix/lib" "$tmp/classify" 2>&1)
    echo "$out" | grep -q '^top class' && ok || bad "installed example did not run: $out"
    sflags=$(PKG_CONFIG_PATH="$tmp/prefix/lib/pkgconfig" pkg-config --static --cflags --libs efficientnetv2)
    if ${CC:-cc} examples/classify.c -static-libgcc $sflags -Wl,-Bstatic -lefficientnetv2 -Wl,-Bdynamic -o "$tmp/classify_static" 2>"$tmp/cc2.log" || \
       ${CC:-cc} examples/classify.c "$tmp/prefix/lib/libefficientnetv2.a" -I"$tmp/prefix/include" $(PKG_CONFIG_PATH="$tmp/prefix/lib/pkgconfig" pkg-config --static --libs-only-other --libs-only-l efficientnetv2 | sed 's/-lefficientnetv2//') -o "$tmp/classify_static" 2>>"$tmp/cc2.log"; then ok; else bad "static link"; cat "$tmp/cc2.log" >&2; fi
else
    bad "pkg-config is not installed (apt-get install pkgconf)"
fi
# the header compiles as C++ and as strict C11
if command -v g++ >/dev/null 2>&1; then
    printf '#include <efficientnetv2.h>\nint main(){env2_model*m=nullptr;return env2_model_create(&m,"b0",nullptr)==ENV2_OK?(env2_model_destroy(m),0):1;}\n' > "$tmp/t.cpp"
    if g++ -std=c++11 -Wall -Wextra -I"$tmp/prefix/include" "$tmp/t.cpp" -L"$tmp/prefix/lib" -lefficientnetv2 -o "$tmp/tcpp" 2>"$tmp/cpp.log" && LD_LIBRARY_PATH="$tmp/prefix/lib" "$tmp/tcpp"; then ok; else bad "C++ use of the header"; cat "$tmp/cpp.log" >&2; fi
fi
printf '#include <efficientnetv2.h>\nint main(void){return env2_version_number()==ENV2_VERSION_NUMBER?0:1;}\n' > "$tmp/t.c"
if ${CC:-cc} -std=c11 -pedantic -Wall -Wextra -Werror -I"$tmp/prefix/include" "$tmp/t.c" -L"$tmp/prefix/lib" -lefficientnetv2 -o "$tmp/tc" && LD_LIBRARY_PATH="$tmp/prefix/lib" "$tmp/tc"; then ok; else bad "strict C11 use of the header"; fi
# Python ctypes binding smoke test
py=$(command -v python3 || true)
if [ -n "$py" ]; then
    if LD_LIBRARY_PATH="$tmp/prefix/lib" ENV2_LIB="$tmp/prefix/lib/libefficientnetv2.so" "$py" examples/python/env2_ctypes.py >"$tmp/py.log" 2>&1; then ok; else bad "python ctypes example"; cat "$tmp/py.log" >&2; fi
fi
# dlopen, a 2-thread forward, dlclose, three times: the pool's idle workers outlive dlclose(), so the
# library must stay mapped (linked with -z nodelete)
if [ -n "$lib" ]; then
    cat > "$tmp/dl.c" <<'EOF'
#include <dlfcn.h>
#include <efficientnetv2.h>
typedef env2_status (*create_fn)(env2_model **, const char *, const env2_model_options *);
typedef env2_status (*threads_fn)(env2_model *, int32_t);
typedef env2_status (*forward_fn)(env2_model *, const float *, int32_t, int32_t, int32_t, env2_layout, float *);
typedef void (*destroy_fn)(env2_model *);
static float x[3 * 64 * 64], y[1000];
int main(int argc, char **argv)
{
    if (argc < 2) return 4;
    for (int i = 0; i < 3; i++) {
        void *h = dlopen(argv[1], RTLD_NOW);
        if (!h) return 1;
        create_fn create = (create_fn)dlsym(h, "env2_model_create");
        threads_fn threads = (threads_fn)dlsym(h, "env2_model_set_threads");
        forward_fn forward = (forward_fn)dlsym(h, "env2_forward");
        destroy_fn destroy = (destroy_fn)dlsym(h, "env2_model_destroy");
        env2_model *m;
        if (!create || !threads || !forward || !destroy || create(&m, "b0", 0) || threads(m, 2)) return 2;
        int rc = forward(m, x, 1, 64, 64, ENV2_LAYOUT_NCHW, y);
        destroy(m);
        dlclose(h);
        if (rc) return 3;
    }
    return 0;
}
EOF
    if ${CC:-cc} -I"$tmp/prefix/include" "$tmp/dl.c" -o "$tmp/dl" -ldl 2>"$tmp/dl.log" && "$tmp/dl" "$lib"; then ok; else bad "dlopen, 2-thread forward, dlclose, repeated"; cat "$tmp/dl.log" >&2; fi
fi
echo "$pass passed, $fail failed"
[ "$fail" = 0 ]
