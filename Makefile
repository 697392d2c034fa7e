# libefficientnetv2 -- plain GNU Makefile.
#   make                 library (static + shared), env2 program, examples
#   make test            all tests (ends with "N passed, N failed")
#   make THREADS=0 ...   build that never starts a thread (OPENMP=0 is accepted as the older name)
#   make install PREFIX=/usr/local DESTDIR=
#   make sanitize        tests under ASan + UBSan
#   make check-torch     full-size parity with torchvision (needs python3-torch)
#   make bench           performance targets against PyTorch and ONNX Runtime, writes docs/PERFORMANCE.md
#   make demo            the main job: progressive training on Fashion-MNIST

CC      ?= cc
# THREADS=1: parallel regions run on the library's own pthread pool;
# THREADS=0: every region runs on the calling thread.  OPENMP is the name
# this switch had when the regions were OpenMP; it is still accepted.
OPENMP  ?= 1
THREADS ?= $(OPENMP)
PREFIX  ?= /usr/local
DESTDIR ?=
LIBDIR  ?= $(PREFIX)/lib
INCDIR  ?= $(PREFIX)/include
BINDIR  ?= $(PREFIX)/bin
PCDIR   ?= $(LIBDIR)/pkgconfig
PYTHON  ?= /usr/bin/python3

VMAJOR := $(shell sed -n 's/^\#define ENV2_VERSION_MAJOR \([0-9]*\).*/\1/p' include/efficientnetv2.h)
VMINOR := $(shell sed -n 's/^\#define ENV2_VERSION_MINOR \([0-9]*\).*/\1/p' include/efficientnetv2.h)
VPATCH := $(shell sed -n 's/^\#define ENV2_VERSION_PATCH \([0-9]*\).*/\1/p' include/efficientnetv2.h)
VERSION := $(VMAJOR).$(VMINOR).$(VPATCH)

OPT     ?= -O2
CFLAGS_BASE := -std=c11 $(OPT) -g -Wall -Wextra -fPIC -fvisibility=hidden -D_POSIX_C_SOURCE=200809L \
               -DENV2_BUILDING_LIBRARY -Iinclude -Isrc -Isrc/core
ifeq ($(THREADS),0)
  THREADFLAGS := -DENV2_NO_THREADS
endif
# `#pragma omp simd` on the channel loops (SIMD_LOOP): the pragma only, no
# OpenMP runtime is linked
SIMD_OK := $(shell echo 'int main(void){return 0;}' | $(CC) -fopenmp-simd -x c - -o /dev/null 2>/dev/null && echo 1)
ifeq ($(SIMD_OK),1)
  SIMDFLAGS := -fopenmp-simd -DENV2_OMP_SIMD
endif
SAN ?=
ALL_CFLAGS := $(CFLAGS_BASE) $(SIMDFLAGS) $(THREADFLAGS) $(SAN) $(CFLAGS)
ALL_LDFLAGS := $(SAN) $(LDFLAGS)
LIBS := -lm -lpthread

# x86-64 SIMD paths live in files named *_avx512.c / *_avx2.c and are compiled
# with the matching flags; the library picks one at run time.
X86 := $(shell $(CC) -dumpmachine | grep -q 'x86_64' && echo 1)
AVX512_FLAGS := -mavx512f -mavx512bw -mavx512vl -mavx512dq -mfma -mavx2
AVX2_FLAGS   := -mavx2 -mfma

# (the directory names date from the OpenMP switch; scripts refer to build/omp1)
BUILD := build/omp$(if $(filter 0,$(THREADS)),0,1)$(if $(SAN),-san)
SRCS := $(sort $(wildcard src/*/*.c))
ifneq ($(X86),1)
  SRCS := $(filter-out %_avx512.c %_avx2.c,$(SRCS))
endif
OBJS := $(SRCS:%.c=$(BUILD)/%.o)

STATIC := $(BUILD)/libefficientnetv2.a
SONAME := libefficientnetv2.so.$(VMAJOR)
SHARED := $(BUILD)/libefficientnetv2.so.$(VERSION)
TOOL_SRCS := $(filter-out tools/%_main.c,$(wildcard tools/*.c))
ENV2BIN := $(BUILD)/env2
TEST_SRCS := $(sort $(wildcard test/test_*.c))
TESTS := $(TEST_SRCS:test/%.c=$(BUILD)/test/%)
EXAMPLE_SRCS := $(wildcard examples/*.c)
EXAMPLES := $(EXAMPLE_SRCS:examples/%.c=$(BUILD)/examples/%)

.PHONY: env2 all lib test clean distclean install uninstall sanitize check-torch bench demo results abi-check abi-update fixtures examples check-determinism
all: lib $(ENV2BIN) env2 examples

lib: $(STATIC) $(SHARED)
	@mkdir -p lib
	@cmp -s $(STATIC) lib/libefficientnetv2.a || cp $(STATIC) lib/libefficientnetv2.a
	@cmp -s $(SHARED) lib/libefficientnetv2.so.$(VERSION) || cp $(SHARED) lib/libefficientnetv2.so.$(VERSION)
	@ln -sf libefficientnetv2.so.$(VERSION) lib/$(SONAME)
	@ln -sf $(SONAME) lib/libefficientnetv2.so

env2: $(ENV2BIN)
	@cp $(ENV2BIN) env2

$(BUILD)/%.o: %.c $(wildcard include/*.h src/*/*.h) Makefile
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) $(if $(findstring _avx512,$<),$(AVX512_FLAGS)) $(if $(findstring _avx2,$<),$(AVX2_FLAGS)) -c $< -o $@

# dwconv_avx2.c, bn_avx2.c and winograd_avx2.c compile their _avx512.c a second time as the 8-lane build
$(BUILD)/src/kernels/dwconv_avx2.o: src/kernels/dwconv_avx512.c
$(BUILD)/src/kernels/bn_avx2.o: src/kernels/bn_avx512.c
$(BUILD)/src/kernels/winograd_avx2.o: src/kernels/winograd_avx512.c

$(STATIC): $(OBJS)
	@rm -f $@
	ar rcs $@ $^

# -z nodelete: dlclose() must not unmap the code the pool's idle worker
# threads are running (they live as long as the process)
$(SHARED): $(OBJS)
	$(CC) -shared -Wl,-soname,$(SONAME) -Wl,--no-undefined -Wl,-z,nodelete -o $@ $^ $(ALL_LDFLAGS) $(LIBS)

$(ENV2BIN): $(TOOL_SRCS) $(STATIC) $(wildcard tools/*.h)
	$(CC) $(ALL_CFLAGS) -o $@ $(TOOL_SRCS) $(STATIC) $(ALL_LDFLAGS) $(LIBS)

examples: $(EXAMPLES)
$(BUILD)/examples/%: examples/%.c $(STATIC)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -o $@ $< $(STATIC) $(ALL_LDFLAGS) $(LIBS)

$(BUILD)/test/test_data: tools/cmd_train.c tools/env2_cli.h
$(BUILD)/test/%: test/%.c test/harness.h $(STATIC)
	@mkdir -p $(dir $@)
	$(CC) $(ALL_CFLAGS) -Itest -o $@ $< $(STATIC) $(ALL_LDFLAGS) $(LIBS)

# test_data compiles the command-line front end in
$(BUILD)/test/test_data: tools/cmd_train.c

# Every test program prints "N passed, N failed" last; run_tests.sh sums them.
# the install test links uninstrumented programs, so sanitizer builds skip it
INSTALL_TEST ?= test/test_install.sh
SCRIPT_TESTS := test/test_cli.sh
test: all $(TESTS)
	@sh test/run_tests.sh $(BUILD) $(TESTS) $(SCRIPT_TESTS) $(INSTALL_TEST)

sanitize:
	$(MAKE) test INSTALL_TEST= SAN="-fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined" OPT=-O1

check-torch: all
	$(PYTHON) tools/parity_full.py --env2 $(ENV2BIN)

fixtures:
	$(PYTHON) tools/make_fixtures.py --out test/data

install: lib
	install -d $(DESTDIR)$(LIBDIR) $(DESTDIR)$(INCDIR) $(DESTDIR)$(PCDIR) $(DESTDIR)$(BINDIR)
	install -m 644 include/efficientnetv2.h $(DESTDIR)$(INCDIR)/
	install -m 644 lib/libefficientnetv2.a $(DESTDIR)$(LIBDIR)/
	install -m 755 lib/libefficientnetv2.so.$(VERSION) $(DESTDIR)$(LIBDIR)/
	ln -sf libefficientnetv2.so.$(VERSION) $(DESTDIR)$(LIBDIR)/$(SONAME)
	ln -sf $(SONAME) $(DESTDIR)$(LIBDIR)/libefficientnetv2.so
	install -m 755 $(ENV2BIN) $(DESTDIR)$(BINDIR)/env2
	sed -e 's|@PREFIX@|$(PREFIX)|g' -e 's|@LIBDIR@|$(LIBDIR)|g' -e 's|@INCDIR@|$(INCDIR)|g' \
	    -e 's|@VERSION@|$(VERSION)|g' \
	    pkgconfig/efficientnetv2.pc.in > $(DESTDIR)$(PCDIR)/efficientnetv2.pc

uninstall:
	rm -f $(DESTDIR)$(INCDIR)/efficientnetv2.h $(DESTDIR)$(LIBDIR)/libefficientnetv2.* $(DESTDIR)$(BINDIR)/env2 \
	      $(DESTDIR)$(PCDIR)/efficientnetv2.pc

# exported symbols, soname, pkg-config, C/C++/ctypes use of the installed library
abi-check: all
	@sh test/test_install.sh

# regenerates the list of exported symbols after an intended API addition
abi-update: lib
	nm -D --defined-only lib/libefficientnetv2.so.$(VERSION) | awk '{print $$3}' | grep '^env2_' | sort > lib/efficientnetv2.sym

# clean keeps build/ort (the ONNX Runtime peer and the exported models, which
# take a download and a minute to recreate); distclean removes it too
clean:
	if [ -d build ]; then find build -mindepth 1 -maxdepth 1 ! -name ort -exec rm -rf {} +; fi
	rm -rf lib/libefficientnetv2.* env2

distclean: clean
	rm -rf build

# The main job: progressive-learning training of a small EfficientNetV2 on
# Fashion-MNIST (Debian's dataset-fashion-mnist); its time on 2 idle cores is in README.md and docs/RESULTS.md.
FMNIST ?= /usr/share/datasets/fashion-mnist
DEMO_ARCH := r1_k3_s1_e1_i24_o24_c1 r1_k3_s2_e4_i24_o48_c1 r1_k3_s1_e4_i48_o48 r2_k3_s2_e4_i48_o64_se0.25 r2_k3_s1_e4_i64_o96_se0.25
DEMO_FLAGS ?= --epochs 15 --batch 64 --optimizer adamw --lr 0.004 --wd 0.05 --lr-schedule cosine \
              --warmup-epochs 1 --label-smoothing 0.1 --ema 0.999 --progressive linear --stages 3 \
              --size-start 32 --size-end 40 --size-multiple 4 --dropout-start 0.0 --dropout-end 0.1 \
              --drop-path 0.1 --crop-area-min 0.85 --no-flip --eval-stage-size --threads 2 --seed 1
demo: all
	@sh tools/get_fashion_mnist.sh "$(FMNIST)"
	./env2 train --arch "$(DEMO_ARCH)" --stem 24 --head 256 --data fashion-mnist --data-dir "$(FMNIST)" \
	    $(DEMO_FLAGS) --out runs/demo --overwrite

# The comparisons of docs/RESULTS.md: the demo recipe with and without
# progressive learning (2 seeds), with fixed instead of adaptive
# regularization, and in PyTorch; two runs at a time, one thread each.
RESULTS_FIXED_REG ?= --dropout-start 0.1
# the fixed-size run that takes about as long as the 15 progressive epochs (0.82x the compute)
RESULTS_FIXED_EPOCHS ?= 12
results: all
	@sh tools/get_fashion_mnist.sh "$(FMNIST)"
	$(PYTHON) tools/results.py --env2 ./env2 --torch --fixed-reg "$(RESULTS_FIXED_REG)" --fixed-epochs $(RESULTS_FIXED_EPOCHS) \
	    --recipe '--arch "$(DEMO_ARCH)" --stem 24 --head 256 --data fashion-mnist --data-dir "$(FMNIST)" $(DEMO_FLAGS)'

# Every performance target against PyTorch and ONNX Runtime on the same machine in the same run;
# writes docs/PERFORMANCE.md.  onnxruntime-node is installed into build/ort on first use
# (tools/get_ort.sh).  E.g. make bench BENCH_FLAGS="--reps 1 --only GEMM --no-write"
BENCH_FLAGS ?=
bench: all
	$(PYTHON) tools/bench.py $(BUILD)/env2 $(BENCH_FLAGS)

# Bit-identical training on the thread pool at 2, 3 and 1 threads, in the
# THREADS=0 build (2 tasks per region run on one thread), and when stopped
# halfway and resumed in another process (and the other build).
check-determinism:
	$(MAKE) -s lib THREADS=1
	$(MAKE) -s lib THREADS=0
	$(CC) $(CFLAGS_BASE) -o build/train_dump_pool test/progs/train_dump.c build/omp1/libefficientnetv2.a $(LIBS)
	$(CC) $(CFLAGS_BASE) -o build/train_dump_serial test/progs/train_dump.c build/omp0/libefficientnetv2.a $(LIBS)
	build/train_dump_pool build/det_pool2.safetensors 2
	build/train_dump_pool build/det_pool3.safetensors 3
	build/train_dump_pool build/det_pool1.safetensors 1
	build/train_dump_serial build/det_serial2.safetensors 2
	build/train_dump_pool build/det_half.ckpt 2 first
	build/train_dump_serial build/det_resumed.safetensors 1 resume build/det_half.ckpt
	cmp build/det_pool2.safetensors build/det_pool3.safetensors
	cmp build/det_pool2.safetensors build/det_pool1.safetensors
	cmp build/det_pool2.safetensors build/det_serial2.safetensors
	cmp build/det_pool2.safetensors build/det_resumed.safetensors
	@echo "determinism: 2, 3 and 1 pool threads, the THREADS=0 build, and stop/resume in a new process give identical weights"
