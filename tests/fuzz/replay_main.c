/* replay_main: drives a fuzz target without libFuzzer.
 *
 *   fuzz_x FILE...                  runs the target on each file
 *   fuzz_x --mutate N SEED FILE...  runs it on N deterministic mutations of each
 *                                   file (bit flips, byte overwrites with edge
 *                                   values, truncation, insertion, digit edits)
 *
 * Not coverage-guided, but reproducible and fast enough for every test run;
 * for coverage-guided fuzzing build the same target with clang -fsanitize=fuzzer. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uint64_t next(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint8_t *read_file(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    size_t cap = 4096, len = 0;
    uint8_t *buf = malloc(cap);
    size_t r;
    while (buf && (r = fread(buf + len, 1, cap - len, f)) > 0) {
        len += r;
        if (len == cap)
            buf = realloc(buf, cap *= 2);
    }
    fclose(f);
    *n = len;
    return buf;
}

static size_t mutate(const uint8_t *src, size_t n, uint8_t *dst, size_t cap, uint64_t *rng)
{
    static const uint8_t edge[] = {0, 1, 0x7f, 0x80, 0xff, '"', ',', ']', '}', '-', '9', ' '};
    size_t len = n < cap ? n : cap;
    memcpy(dst, src, len);
    int rounds = 1 + (int)(next(rng) % 4);
    for (int k = 0; k < rounds && len > 0; k++) {
        size_t at = next(rng) % len;
        switch (next(rng) % 6) {
        case 0: dst[at] ^= (uint8_t)(1u << (next(rng) % 8)); break;
        case 1: dst[at] = edge[next(rng) % sizeof edge]; break;
        case 2: len = at; break;                                        /* truncate */
        case 3:                                                         /* insert a byte */
            if (len < cap) {
                memmove(dst + at + 1, dst + at, len - at);
                dst[at] = edge[next(rng) % sizeof edge];
                len++;
            }
            break;
        case 4:                                                         /* edit a digit */
            for (size_t j = at; j < len; j++)
                if (dst[j] >= '0' && dst[j] <= '9') {
                    dst[j] = (uint8_t)('0' + next(rng) % 10);
                    break;
                }
            break;
        default: dst[at] = (uint8_t)next(rng); break;
        }
    }
    return len;
}

int main(int argc, char **argv)
{
    long n_mut = 0;
    uint64_t seed = 1;
    int i = 1;
    if (argc > 3 && strcmp(argv[1], "--mutate") == 0) {
        n_mut = atol(argv[2]);
        seed = strtoull(argv[3], NULL, 10);
        i = 4;
    }
    long runs = 0;
    for (; i < argc; i++) {
        size_t n;
        uint8_t *data = read_file(argv[i], &n);
        if (!data) {
            fprintf(stderr, "cannot read %s\n", argv[i]);
            return 2;
        }
        uint8_t *exact = malloc(n ? n : 1);  /* exact size, so reads past the end are caught */
        memcpy(exact, data, n);
        LLVMFuzzerTestOneInput(exact, n);
        free(exact);
        runs++;
        uint8_t *buf = malloc(n + 64);
        uint64_t rng = seed ^ (uint64_t)i;
        for (long k = 0; k < n_mut; k++) {
            size_t len = mutate(data, n, buf, n + 64, &rng);
            exact = malloc(len ? len : 1);
            memcpy(exact, buf, len);
            LLVMFuzzerTestOneInput(exact, len);
            free(exact);
            runs++;
        }
        free(buf);
        free(data);
    }
    printf("%ld inputs run\n", runs);
    return 0;
}
