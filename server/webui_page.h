/* webui_page: the built-in chat page (server/webui/index.html). */
#ifndef MOETIER_WEBUI_PAGE_H
#define MOETIER_WEBUI_PAGE_H

#include <stddef.h>

/* The page's bytes (static, never freed), *len of them. */
const char *webui_page(size_t *len);

#endif
