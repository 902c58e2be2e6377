/* Fuzz target: the safetensors header parser and validator on arbitrary bytes.
 * Every tensor it accepts must lie inside the buffer (touched here, so ASan
 * catches an accepted out-of-bounds range). */
#include <stddef.h>
#include <stdint.h>

#include "core/model/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    st_file f;
    errbuf e;
    if (st_file_parse(&f, data, size, "fuzz.safetensors", &e) != 0)
        return 0;
    volatile uint8_t sink = 0;
    for (int i = 0; i < f.n_tensors; i++)
        if (f.tensors[i].nbytes) {
            sink ^= f.tensors[i].data[0];
            sink ^= f.tensors[i].data[f.tensors[i].nbytes - 1];
        }
    (void)sink;
    st_file_close(&f);
    return 0;
}
