/* dtype: the element types of safetensors files and the scalar conversions the
 * weight formats need (bf16, f16 and OCP FP8 E4M3 to float32 and back).
 *
 * Every dtype of the safetensors list is recognised (so a file holding one we do
 * not compute with still opens); only some are used by the model's math. */
#ifndef MOETIER_DTYPE_H
#define MOETIER_DTYPE_H

#include <stddef.h>
#include <stdint.h>

typedef enum dtype {
    DT_BOOL, DT_U8, DT_I8, DT_I16, DT_U16, DT_I32, DT_U32, DT_I64, DT_U64,
    DT_F16, DT_BF16, DT_F32, DT_F64, DT_F8_E4M3, DT_F8_E5M2, DT_F8_E8M0,
    DT_F6_E2M3, DT_F6_E3M2, DT_F4, DT_C64,
    DT_COUNT,
    DT_INVALID = -1
} dtype;

/* "BF16" -> DT_BF16; DT_INVALID for an unknown name. */
dtype dtype_from_name(const char *name);
const char *dtype_name(dtype t);
/* Bits per element (4 for F4, 6 for the F6 types, 64 for C64 ...). */
int dtype_bits(dtype t);

float bf16_to_f32(uint16_t h);
/* dst[i] = bf16_to_f32(src[i]), a loop the compiler vectorizes */
void bf16_widen(const uint16_t *src, size_t n, float *dst);
uint16_t f32_to_bf16(float f);          /* round to nearest even; NaN stays NaN */
float f16_to_f32(uint16_t h);
float e4m3_to_f32(uint8_t q);           /* OCP E4M3 "fn": bias 7, no inf, 0x7F/0xFF NaN */
uint8_t f32_to_e4m3(float f);           /* round to nearest even, saturates at +-448 */

#endif
