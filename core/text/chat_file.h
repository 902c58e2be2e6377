/* chat_file: a conversation as a file holds it, for `moetier chat`'s /load:
 * a JSON list of messages, or an object whose "messages" is one (a chat
 * request's body, a conversation the chat page exported). */
#ifndef MOETIER_CHAT_FILE_H
#define MOETIER_CHAT_FILE_H

#include <cJSON.h>
#include <stddef.h>

#include "core/base/errbuf.h"

/* The messages of text[0, len), checked: each a system, user or assistant
 * message with text content (an assistant's may be null), its reasoning in
 * "reasoning_content" or "reasoning"; other fields are left. Returns them in
 * the form a chat template renders ({role, content, reasoning_content when
 * an assistant's is not empty}); NULL with e naming `name`, the message and
 * what was expected. */
cJSON *chat_file_parse(const char *text, size_t len, const char *name, errbuf *e);

#endif
