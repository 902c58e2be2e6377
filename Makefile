# moetier build. `make` builds build/moetier; `make test` builds and runs the test
# suite; `make test SANITIZE=1` runs it under ASan+UBSan; `make test-race` drives
# the threaded paths through a ThreadSanitizer build; `make run` synthesises a
# small model and generates from it; `make deps` installs the Debian packages
# (and the npm packages the server tests drive the server and its chat page with).
# CUDA: kernels/*.cu are built when nvcc is found; CUDA=0 turns that off.

CC ?= cc
NVCC ?= $(shell command -v nvcc 2>/dev/null || ls /usr/local/cuda/bin/nvcc 2>/dev/null)
CUDA ?= $(if $(NVCC),1,0)
SANITIZE ?= 0
# Warnings are errors in CI (CI=true) or with WERROR=1.
WERROR ?= $(if $(filter true,$(CI)),1,0)

BUILD := build$(if $(filter 1,$(SANITIZE)),-san,)$(if $(filter thread,$(SANITIZE)),-tsan,)

DEPS_APT := build-essential pkg-config liburing-dev libnuma-dev libhwloc-dev liblz4-dev \
            libcjson-dev libpcre2-dev libmicrohttpd-dev libxxhash-dev libcriterion-dev \
            clang libclang-rt-14-dev fio xz-utils curl
# the chat page's tests drive a headless Chromium (its recommends, a desktop's, are not needed)
DEPS_APT_BROWSER := chromium
# the server's client tests run on Node.js (Debian's, where the machine has no npm of its own)
DEPS_APT_NODE := nodejs npm

# Portable baseline code: the SIMD kernels pick AVX-512/AVX2 at run time.
OPT := -O2
CFLAGS_BASE := -std=c11 -D_GNU_SOURCE -Wall -Wextra -Wshadow -Wno-unused-parameter -Wno-format-truncation \
               -fno-strict-aliasing -I. -I/usr/include/cjson -pthread -g
CFLAGS_BASE += $(if $(filter 1,$(WERROR)),-Werror,)
SAN_ON := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
SANFLAGS := $(if $(filter 1,$(SANITIZE)),$(SAN_ON))$(if $(filter thread,$(SANITIZE)),-fsanitize=thread)
CFLAGS := $(CFLAGS_BASE) $(OPT) $(SANFLAGS) $(EXTRA_CFLAGS)
LDLIBS := -luring -lnuma -lhwloc -llz4 -lcjson -lpcre2-8 -lxxhash -lmicrohttpd -lm -pthread
LDLIBS_HOST := $(LDLIBS)
LDFLAGS := $(SANFLAGS)

LIB_DIRS := core/base core/model core/engine core/text core/app server tiers prefetch cpu_kernels
LIB_SRC := $(filter-out core/app/main.c,$(foreach d,$(LIB_DIRS),$(wildcard $(d)/*.c)))
# host-side CUDA helpers that need no CUDA (the planner sizes the GPU without one)
LIB_SRC += kernels/gpu_layout.c kernels/gpu_twin.c kernels/gpu_twin_avx512.c kernels/gpu_twin_avx2.c \
           kernels/hybrid_plan.c kernels/decode_bound.c

ifeq ($(CUDA),1)
CUDA_HOME ?= $(patsubst %/bin/nvcc,%,$(NVCC))
CU_SRC := $(wildcard kernels/*.cu)
CFLAGS += -DMOETIER_CUDA=1 -I$(CUDA_HOME)/include
# sm_90 (H100/H200) machine code, and PTX that the driver compiles for any newer
# or older GPU down to sm_75 (the oldest CUDA 13 supports)
# (IEEE division and square root, subnormals kept and no multiply-add fused
# but where the code says fmaf: the CPU twin computes each operation so, and
# its results must be the GPU's bit for bit; these are nvcc's defaults but
# -fmad, said here so that no added flag such as --use_fast_math changes them)
NVCCFLAGS := -O2 -I. -std=c++17 -gencode arch=compute_90,code=sm_90 \
             -gencode arch=compute_75,code=compute_75 -Xcompiler -fPIC,-Wall \
             -fmad=false -prec-div=true -prec-sqrt=true -ftz=false \
             $(if $(filter 1,$(WERROR)),-Xcompiler -Werror -Werror all-warnings,)
# the CUDA runtime linked statically: the binary then needs only the driver, and a
# machine without one gets the no-device notice instead of a loader error
LDLIBS += -L$(CUDA_HOME)/lib64 -lcudart_static -ldl -lrt -lstdc++
else
CU_SRC :=
LIB_SRC += kernels/gpu_probe_none.c kernels/gpu_backend_none.c kernels/gpu_bench_none.c
endif

LIB_OBJ := $(LIB_SRC:%.c=$(BUILD)/%.o) $(CU_SRC:%.cu=$(BUILD)/%.cu.o)
TEST_SRC := $(wildcard tests/unit/*.c)
TEST_OBJ := $(TEST_SRC:%.c=$(BUILD)/%.o)
FUZZ_SRC := $(wildcard tests/fuzz/*.c)

.PHONY: all test test-race test-gpu-emu run deps clean bench fuzz fuzz-keep

all: $(BUILD)/moetier

$(BUILD)/libmoetier.a: $(LIB_OBJ)
	@mkdir -p $(@D)
	ar rcs $@ $^

$(BUILD)/moetier: $(BUILD)/core/app/main.o $(BUILD)/libmoetier.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/%.o: %.c
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -MMD -MP -c $< -o $@

$(BUILD)/%.cu.o: %.cu $(wildcard kernels/*.cuh kernels/*.h)
	@mkdir -p $(@D)
	$(NVCC) $(NVCCFLAGS) -MMD -MP -c $< -o $@

$(BUILD)/tests/unit_tests: $(TEST_OBJ) $(BUILD)/libmoetier.a
	$(CC) $(LDFLAGS) -o $@ $^ -lcriterion $(LDLIBS)

# Fuzz targets are built as plain replay programs here (no libFuzzer needed) and
# fed the seed corpus plus mutated inputs by the tests; with clang, build them
# with -fsanitize=fuzzer for coverage-guided fuzzing (docs/testing.md).
$(BUILD)/fuzz/%: tests/fuzz/%.c tests/fuzz/replay_main.c $(BUILD)/libmoetier.a
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -o $@ $< tests/fuzz/replay_main.c $(BUILD)/libmoetier.a $(LDLIBS) $(LDFLAGS)

FUZZ_BIN := $(patsubst tests/fuzz/%.c,$(BUILD)/fuzz/%,$(filter-out tests/fuzz/replay_main.c,$(FUZZ_SRC)))

BENCH_BIN := $(patsubst bench/%.c,$(BUILD)/bench/%,$(wildcard bench/*.c))
$(BUILD)/bench/%: bench/%.c $(BUILD)/libmoetier.a
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -o $@ $< $(BUILD)/libmoetier.a $(LDLIBS) $(LDFLAGS)

# Benchmarks print one JSON line each (see docs/benchmarks.md).
bench: $(BENCH_BIN)
	@for b in $(BENCH_BIN); do $$b || exit 1; done

# Coverage-guided fuzzing with libFuzzer (clang, from make deps) for a bounded
# time per target: make fuzz FUZZ_SECONDS=60. The library (but its kernels) is compiled once with
# the fuzzer's coverage and the sanitizers, and each target links only what it uses.
FUZZ_SECONDS ?= 30
FUZZ_CC ?= clang
FUZZ_BUILD := build/libfuzzer
FUZZ_CFLAGS := -g -O1 -std=c11 -D_GNU_SOURCE -I. -I/usr/include/cjson
# (the compute kernels are left out: no target links them, and compiled with the
# fuzzer's coverage and the sanitizers they took 6 of this step's 9 minutes on
# 2 cores; a target that needs them fails to link, naming the symbol)
FUZZ_LIB_SRC := $(filter-out core/app/% cpu_kernels/% kernels/%,$(LIB_SRC))
FUZZ_LIB_OBJ := $(FUZZ_LIB_SRC:%.c=$(FUZZ_BUILD)/%.o)
FUZZ_TARGETS := $(patsubst tests/fuzz/%.c,$(FUZZ_BUILD)/%,$(filter-out tests/fuzz/replay_main.c,$(FUZZ_SRC)))

$(FUZZ_BUILD)/%.o: %.c
	@mkdir -p $(@D)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=undefined -MMD -MP -c $< -o $@

# the chat page's bytes are taken in by the assembler (.incbin), unseen by -MMD
$(BUILD)/server/webui_page.o $(FUZZ_BUILD)/server/webui_page.o: server/webui/index.html

$(FUZZ_BUILD)/libmoetier.a: $(FUZZ_LIB_OBJ)
	ar rcs $@ $^

.SECONDARY: $(patsubst $(FUZZ_BUILD)/%,$(FUZZ_BUILD)/tests/fuzz/%.o,$(FUZZ_TARGETS))
$(FUZZ_BUILD)/fuzz_%: $(FUZZ_BUILD)/tests/fuzz/fuzz_%.o $(FUZZ_BUILD)/libmoetier.a
	$(FUZZ_CC) -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined $^ $(filter-out -pthread,$(LDLIBS)) -o $@

# Each run starts from the hand-written seeds (tests/fuzz/corpus/) and the inputs
# earlier runs found (tests/fuzz/grown/); `make fuzz-keep` adds what this run
# found that covers something new to tests/fuzz/grown/.
# The targets run side by side under make -j (each fuzzer takes one core).
FUZZ_RUNS := $(patsubst $(FUZZ_BUILD)/%,fuzz-run-%,$(FUZZ_TARGETS))
.PHONY: $(FUZZ_RUNS)
fuzz: $(FUZZ_RUNS)
$(FUZZ_RUNS): fuzz-run-%: $(FUZZ_BUILD)/%
	@t=$*; \
	  rm -rf $(FUZZ_BUILD)/$$t.corpus; cp -r tests/fuzz/corpus/$${t#fuzz_} $(FUZZ_BUILD)/$$t.corpus; \
	  cp tests/fuzz/grown/$${t#fuzz_}/* $(FUZZ_BUILD)/$$t.corpus/ 2>/dev/null || true; \
	  $(FUZZ_BUILD)/$$t $(FUZZ_BUILD)/$$t.corpus -max_total_time=$(FUZZ_SECONDS) \
	    -artifact_prefix=$(FUZZ_BUILD)/$$t- -print_final_stats=1 > $(FUZZ_BUILD)/$$t.log 2>&1 \
	    || { tail -40 $(FUZZ_BUILD)/$$t.log; echo "fuzz: $$t failed"; exit 1; }; \
	  echo "== $$t ($(FUZZ_SECONDS) s): $$(grep -E '^Done|stat::number_of_executed_units' \
	    $(FUZZ_BUILD)/$$t.log | tr '\n' ' ')"

fuzz-keep: $(FUZZ_TARGETS)
	@for t in $(notdir $(FUZZ_TARGETS)); do \
	  n=$${t#fuzz_}; m=$(FUZZ_BUILD)/$$t.merge; \
	  [ -d $(FUZZ_BUILD)/$$t.corpus ] || continue; \
	  rm -rf $$m; mkdir -p $$m tests/fuzz/grown/$$n; \
	  cp tests/fuzz/corpus/$$n/* tests/fuzz/grown/$$n/* $$m/ 2>/dev/null || true; \
	  before=$$(ls $$m | wc -l); \
	  $(FUZZ_BUILD)/$$t -merge=1 $$m $(FUZZ_BUILD)/$$t.corpus > $$m.log 2>&1 \
	    || { tail -20 $$m.log; echo "fuzz-keep: $$t failed"; exit 1; }; \
	  for f in $$m/*; do b=$$(basename $$f); \
	    [ -e tests/fuzz/corpus/$$n/$$b ] || [ -e tests/fuzz/grown/$$n/$$b ] || cp $$f tests/fuzz/grown/$$n/; \
	  done; \
	  echo "$$t: $$(( $$(ls $$m | wc -l) - before )) new inputs kept"; \
	done

# Tests find the binaries and ../shared/testdata through these variables.
test: $(BUILD)/moetier $(BUILD)/tests/unit_tests $(FUZZ_BIN)
	MOETIER_BIN=$(abspath $(BUILD)/moetier) MOETIER_FUZZ_DIR=$(abspath $(BUILD)/fuzz) \
	MOETIER_TESTDATA=$${MOETIER_TESTDATA:-$(abspath ../shared/testdata)} \
	MOETIER_TMP=$(abspath $(BUILD)/tmp) \
	LSAN_OPTIONS=suppressions=$(abspath tests/lsan.supp):print_suppressions=0 \
	$(BUILD)/tests/unit_tests $(TEST_ARGS)
	MOETIER_BIN=$(abspath $(BUILD)/moetier) MOETIER_TMP=$(abspath $(BUILD)/tmp) \
	MOETIER_SANITIZED=$(filter 1,$(SANITIZE)) \
	LSAN_OPTIONS=suppressions=$(abspath tests/lsan.supp):print_suppressions=0 \
	bash tests/server/run.sh

# Races: Criterion's runner does not start under ThreadSanitizer, so the threaded
# paths (thread pool, store readers, lookahead, server) are driven through a TSan
# build of the command line, in build-tsan/ (without CUDA: the GPU paths need a
# device).
test-race:
	$(MAKE) SANITIZE=thread CUDA=0 build-tsan/moetier
	@mkdir -p build-tsan/tmp
	MOETIER_BIN=$(abspath build-tsan/moetier) MOETIER_TMP=$(abspath build-tsan/tmp) bash tests/race/run.sh

# The GPU backend's tests on a machine without a GPU: kernels/*.cu compiled for
# the CPU against tests/cuda_emu (blocks in turn, a block's threads as fibers),
# linked with the CUDA=0 library and the unit tests (docs/testing.md). With
# SANITIZE=1 the kernels too run under ASan+UBSan, in build-gpu-emu-san/.
EMU_BUILD := build-gpu-emu$(if $(filter 1,$(SANITIZE)),-san,)
# (-fno-unswitch-loops: the emulation tells a barrier or shuffle by the one
# place it is called from, and a loop copied per branch of a test inside it,
# as GCC does from -O3 on, would call one from two)
EMU_CXXFLAGS := -std=c++17 -O1 -fno-unswitch-loops -g -Wall -Wno-unknown-pragmas -DMOETIER_CUDA_EMU -Itests/cuda_emu -I. \
                -U_FORTIFY_SOURCE -fno-stack-protector $(if $(filter 1,$(WERROR)),-Werror,) $(SANFLAGS)
EMU_KOBJ := $(patsubst kernels/%.cu,$(EMU_BUILD)/kernels/%.o,$(wildcard kernels/*.cu))
GPU_EMU_TESTS ?= @(gpu/*|bench_model/*_gpu|cache_type/*_gpu|golden/*_gpu|tiers/invariance_gpu_vram_cache_int4*|prompt_cache/*_gpu|prompt_file/*_gpu|engine_seqs/*_gpu|draft/*_gpu|profile/*_gpu)

$(EMU_BUILD)/kernels/%.o: kernels/%.cu $(wildcard kernels/*.cuh kernels/*.h tests/cuda_emu/*.h)
	@mkdir -p $(@D)
	$(CXX) $(EMU_CXXFLAGS) -MMD -MP -x c++ -c $< -o $@

EMU_RUNTIME := $(patsubst tests/cuda_emu/%.cc,$(EMU_BUILD)/%.o,$(wildcard tests/cuda_emu/*.cc))
$(EMU_BUILD)/%.o: tests/cuda_emu/%.cc tests/cuda_emu/cuda_runtime.h
	@mkdir -p $(@D)
	$(CXX) $(EMU_CXXFLAGS) -c $< -o $@

# the library and test objects of the plain build, the device code swapped for the emulation's
test-gpu-emu: $(EMU_KOBJ) $(EMU_RUNTIME) $(BUILD)/libmoetier.a $(BUILD)/moetier $(TEST_OBJ)
	cp $(BUILD)/libmoetier.a $(EMU_BUILD)/libmoetier.a
	ar d $(EMU_BUILD)/libmoetier.a $$(ar t $(BUILD)/libmoetier.a | grep -E '^gpu_.*_none\.o$$|\.cu\.o$$')
	$(CXX) $(LDFLAGS) -o $(EMU_BUILD)/unit_tests $(TEST_OBJ) $(EMU_KOBJ) $(EMU_RUNTIME) \
	  $(EMU_BUILD)/libmoetier.a -lcriterion $(LDLIBS_HOST)
	$(CXX) $(LDFLAGS) -o $(EMU_BUILD)/moetier $(BUILD)/core/app/main.o $(EMU_KOBJ) \
	  $(EMU_RUNTIME) $(EMU_BUILD)/libmoetier.a $(LDLIBS_HOST)
	@mkdir -p $(EMU_BUILD)/tmp
	MOETIER_BIN=$(abspath $(EMU_BUILD)/moetier) MOETIER_TMP=$(abspath $(EMU_BUILD)/tmp) \
	LSAN_OPTIONS=suppressions=$(abspath tests/lsan.supp):print_suppressions=0 \
	MOETIER_TESTDATA=$${MOETIER_TESTDATA:-$(abspath ../shared/testdata)} \
	$(EMU_BUILD)/unit_tests --filter '$(GPU_EMU_TESTS)' $(TEST_ARGS)

RUN_MODEL := $(BUILD)/models/k2-tiny-bf16
run: $(BUILD)/moetier
	@test -f $(RUN_MODEL)/config.json || $(BUILD)/moetier synth --preset k2-tiny --format bf16 --seed 1 -o $(RUN_MODEL)
	$(BUILD)/moetier run -m $(RUN_MODEL) -p "The quick brown fox" -n 64 --seed 1 --ignore-eos

deps:
	@if [ "$$(id -u)" = 0 ]; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(DEPS_APT) && \
	  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(DEPS_APT_BROWSER) && \
	  { command -v npm >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(DEPS_APT_NODE); }; \
	else \
	  echo "make deps needs root to install packages. Run:"; \
	  echo "  sudo apt-get install -y $(DEPS_APT)"; \
	  echo "  sudo apt-get install -y --no-install-recommends $(DEPS_APT_BROWSER)"; \
	  echo "  sudo apt-get install -y $(DEPS_APT_NODE)   (unless Node.js and npm are installed)"; \
	  exit 1; \
	fi
	@if command -v npm >/dev/null; then npm ci --prefix tests/server --no-audit --no-fund; \
	else echo "npm not found: the client and chat page tests of the server will be skipped"; fi

clean:
	rm -rf build build-san build-tsan build-gpu-emu build-gpu-emu-san

-include $(LIB_OBJ:.o=.d) $(TEST_OBJ:.o=.d) $(BUILD)/core/app/main.d $(EMU_KOBJ:.o=.d)
-include $(FUZZ_LIB_OBJ:.o=.d) $(patsubst $(FUZZ_BUILD)/%,$(FUZZ_BUILD)/tests/fuzz/%.d,$(FUZZ_TARGETS))
