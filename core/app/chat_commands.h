/* chat_commands: what `moetier chat`'s commands do to a conversation (the
 * list of messages its chat template renders, as an OpenAI request holds
 * them): /undo and /regen take back its last exchange, /save writes it as
 * JSON, /load reads one back (a list of messages, a chat request's body or
 * the chat page's exported conversation), /read makes a text file a block of
 * the next message. */
#ifndef MOETIER_CHAT_COMMANDS_H
#define MOETIER_CHAT_COMMANDS_H

#include <cJSON.h>

#include "core/base/errbuf.h"

/* the largest file /read takes */
#define CHAT_READ_MAX_BYTES (4u << 20)

/* Removes the last user message and what followed it; returns that message's
 * text (malloc'd), or NULL when the conversation has no user message. */
char *chat_take_last_exchange(cJSON *messages);
/* the largest file /save replaces (one larger is not a conversation it wrote) */
#define CHAT_SAVE_MAX_BYTES (256u << 20)

/* Writes the messages to path as a JSON list, atomically; -1 with e set (also
 * when path holds something else than a conversation: it is not replaced). */
int chat_save(const cJSON *messages, const char *path, errbuf *e);
/* The conversation in the JSON file at path (chat_file_parse); NULL with e
 * naming the file, the message and what was expected. */
cJSON *chat_load(const char *path, errbuf *e);
/* The text file at path as a block of a message: its name, a colon, then its
 * text in a fenced block (the fence longer than any run of backticks in it,
 * the extension naming the language); malloc'd, or NULL with e set (not UTF-8
 * text, larger than CHAT_READ_MAX_BYTES, unreadable). */
char *chat_file_block(const char *path, errbuf *e);

#endif
