/* webui_page: the chat page `moetier serve` answers GET / with
 * (server/webui/index.html, one self-contained file: its script and style
 * inline, nothing fetched from elsewhere), built into the binary so the
 * server needs no files beside it. The assembler's .incbin takes the file's
 * bytes as they are; the Makefile names the file as this object's
 * prerequisite. */
#include "webui_page.h"

__asm__(".section .rodata\n"
        ".balign 16\n"
        ".globl webui_page_bytes\n"
        "webui_page_bytes:\n"
        ".incbin \"server/webui/index.html\"\n"
        ".globl webui_page_bytes_end\n"
        "webui_page_bytes_end:\n"
        ".byte 0\n"
        ".previous\n");

extern const char webui_page_bytes[], webui_page_bytes_end[];

const char *webui_page(size_t *len)
{
    *len = (size_t)(webui_page_bytes_end - webui_page_bytes);
    return webui_page_bytes;
}
