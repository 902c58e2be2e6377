/* Fuzz target: a string's pattern (json_regex): the input's first line
 * compiled as a pattern (refused with a reason, or an automaton whose start
 * can reach a match), the rest fed to it code point by code point as a
 * schema-held string takes them: a code point is taken only where
 * json_regex_may_take allows it, and after each one the state must still
 * have a completion (no dead end). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/text/json_regex.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const uint8_t *nl = memchr(data, '\n', size);
    size_t plen = nl ? (size_t)(nl - data) : size;
    json_regex r;
    errbuf e;
    if (json_regex_compile(&r, (const char *)data, plen, &e)) {
        if (!e.msg[0])
            abort(); /* every refusal says why */
        return 0;
    }
    json_regex_set s;
    json_regex_start(&s);
    if (!json_regex_feasible(&r, &s, 0, -1))
        abort();
    for (size_t i = plen + 1; i < size; i++) {
        uint32_t c = data[i];
        if (c >= 0xc0 && i + 1 < size) /* a two-byte character, loosely */
            c = (c & 0x1f) << 6 | (data[++i] & 0x3f);
        if (!json_regex_may_take(&r, &s, c, c, 0, -1))
            continue; /* the string would not take it: try the next */
        json_regex_step(&r, &s, c);
        if (!json_regex_feasible(&r, &s, 0, -1))
            abort(); /* taken, then no completion */
    }
    json_regex_free(&r);
    return 0;
}
