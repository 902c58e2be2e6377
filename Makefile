# moetier build. `make` builds build/moetier; `make test` builds and runs the test
# suite; `make test SANITIZE=1` runs it under ASan+UBSan; `make run` synthesises a
# small model and generates from it; `make deps` installs the Debian packages
# (and the npm package the server tests drive the server with).
# CUDA: kernels/*.cu are built when nvcc is found; CUDA=0 turns that off.

CC ?= cc
NVCC ?= $(shell command -v nvcc 2>/dev/null || ls /usr/local/cuda/bin/nvcc 2>/dev/null)
CUDA ?= $(if $(NVCC),1,0)
SANITIZE ?= 0
# Warnings are errors in CI (CI=true) or with WERROR=1.
WERROR ?= $(if $(filter true,$(CI)),1,0)

BUILD := build$(if $(filter 1,$(SANITIZE)),-san,)

DEPS_APT := build-essential pkg-config liburing-dev libnuma-dev libhwloc-dev liblz4-dev \
            libcjson-dev libpcre2-dev libmicrohttpd-dev libxxhash-dev libcriterion-dev \
            clang libclang-rt-14-dev fio xz-utils curl

# Portable baseline code: the SIMD kernels pick AVX-512/AVX2 at run time.
OPT := -O2
CFLAGS_BASE := -std=c11 -D_GNU_SOURCE -Wall -Wextra -Wshadow -Wno-unused-parameter -Wno-format-truncation \
               -fno-strict-aliasing -I. -I/usr/include/cjson -pthread -g
CFLAGS_BASE += $(if $(filter 1,$(WERROR)),-Werror,)
SAN_ON := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
SANFLAGS := $(if $(filter 1,$(SANITIZE)),$(SAN_ON))
CFLAGS := $(CFLAGS_BASE) $(OPT) $(SANFLAGS) $(EXTRA_CFLAGS)
LDLIBS := -luring -lnuma -lhwloc -llz4 -lcjson -lpcre2-8 -lxxhash -lmicrohttpd -lm -pthread
LDFLAGS := $(SANFLAGS)

LIB_DIRS := core/base core/model core/engine core/text core/app server tiers prefetch cpu_kernels
LIB_SRC := $(filter-out core/app/main.c,$(foreach d,$(LIB_DIRS),$(wildcard $(d)/*.c)))

ifeq ($(CUDA),1)
CUDA_HOME ?= $(patsubst %/bin/nvcc,%,$(NVCC))
CU_SRC := $(wildcard kernels/*.cu)
CFLAGS += -DMOETIER_CUDA=1 -I$(CUDA_HOME)/include
NVCCFLAGS := -O2 -I. -gencode arch=compute_90,code=sm_90 -gencode arch=compute_90,code=compute_90 \
             -Xcompiler -fPIC
LDLIBS += -L$(CUDA_HOME)/lib64 -Wl,-rpath,$(CUDA_HOME)/lib64 -lcudart
else
CU_SRC :=
LIB_SRC += kernels/gpu_probe_none.c
endif

LIB_OBJ := $(LIB_SRC:%.c=$(BUILD)/%.o) $(CU_SRC:%.cu=$(BUILD)/%.cu.o)
TEST_SRC := $(wildcard tests/unit/*.c)
TEST_OBJ := $(TEST_SRC:%.c=$(BUILD)/%.o)
FUZZ_SRC := $(wildcard tests/fuzz/*.c)

.PHONY: all test run deps clean bench fuzz

all: $(BUILD)/moetier

$(BUILD)/libmoetier.a: $(LIB_OBJ)
	@mkdir -p $(@D)
	ar rcs $@ $^

$(BUILD)/moetier: $(BUILD)/core/app/main.o $(BUILD)/libmoetier.a
	$(CC) $(LDFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/%.o: %.c
	@mkdir -p $(@D)
	$(CC) $(CFLAGS) -MMD -MP -c $< -o $@

$(BUILD)/%.cu.o: %.cu
	@mkdir -p $(@D)
	$(NVCC) $(NVCCFLAGS) -c $< -o $@

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
# time per target: make fuzz FUZZ_SECONDS=60.
FUZZ_SECONDS ?= 30
FUZZ_CC ?= clang
FUZZ_LIB_SRC := $(filter-out core/app/%,$(LIB_SRC))
fuzz:
	@mkdir -p build/libfuzzer
	@for t in $(patsubst tests/fuzz/%.c,%,$(filter-out tests/fuzz/replay_main.c,$(FUZZ_SRC))); do \
	  echo "== $$t ($(FUZZ_SECONDS) s)"; \
	  $(FUZZ_CC) -g -O1 -std=c11 -D_GNU_SOURCE -fsanitize=fuzzer,address,undefined -I. -I/usr/include/cjson \
	    tests/fuzz/$$t.c $(FUZZ_LIB_SRC) $(filter-out -pthread,$(LDLIBS)) -o build/libfuzzer/$$t || exit 1; \
	  rm -rf build/libfuzzer/$$t.corpus; cp -r tests/fuzz/corpus/$${t#fuzz_} build/libfuzzer/$$t.corpus; \
	  build/libfuzzer/$$t build/libfuzzer/$$t.corpus -max_total_time=$(FUZZ_SECONDS) \
	    -print_final_stats=1 > build/libfuzzer/$$t.log 2>&1 \
	    || { tail -40 build/libfuzzer/$$t.log; echo "fuzz: $$t failed"; exit 1; }; \
	  grep -E "^Done|stat::number_of_executed_units" build/libfuzzer/$$t.log; \
	done

# Tests find the binaries and ../shared/testdata through these variables.
test: $(BUILD)/moetier $(BUILD)/tests/unit_tests $(FUZZ_BIN)
	MOETIER_BIN=$(abspath $(BUILD)/moetier) MOETIER_FUZZ_DIR=$(abspath $(BUILD)/fuzz) \
	MOETIER_TESTDATA=$${MOETIER_TESTDATA:-$(abspath ../shared/testdata)} \
	MOETIER_TMP=$(abspath $(BUILD)/tmp) \
	LSAN_OPTIONS=suppressions=$(abspath tests/lsan.supp):print_suppressions=0 \
	$(BUILD)/tests/unit_tests $(TEST_ARGS)
	MOETIER_BIN=$(abspath $(BUILD)/moetier) MOETIER_TMP=$(abspath $(BUILD)/tmp) \
	LSAN_OPTIONS=suppressions=$(abspath tests/lsan.supp):print_suppressions=0 \
	bash tests/server/run.sh

RUN_MODEL := $(BUILD)/models/k2-tiny-bf16
run: $(BUILD)/moetier
	@test -f $(RUN_MODEL)/config.json || $(BUILD)/moetier synth --preset k2-tiny --format bf16 --seed 1 -o $(RUN_MODEL)
	$(BUILD)/moetier run -m $(RUN_MODEL) -p "The quick brown fox" -n 64 --seed 1 --ignore-eos

deps:
	@if [ "$$(id -u)" = 0 ]; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(DEPS_APT); \
	else \
	  echo "make deps needs root to install packages. Run:"; \
	  echo "  sudo apt-get install -y $(DEPS_APT)"; \
	  exit 1; \
	fi
	@if command -v npm >/dev/null; then npm ci --prefix tests/server --no-audit --no-fund; \
	else echo "npm not found: the openai-client server tests will be skipped"; fi

clean:
	rm -rf build build-san

-include $(LIB_OBJ:.o=.d) $(TEST_OBJ:.o=.d) $(BUILD)/core/app/main.d
