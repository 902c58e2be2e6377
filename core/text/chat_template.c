/* chat_template: which chat format a model gets, and rendering through it
 * (see chat_template.h). */
#define _POSIX_C_SOURCE 200809L
#include "core/text/chat_template.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/base/fileutil.h"
#include "core/text/utf8.h"

/* The special tokens Hugging Face passes to a template: tokenizer_config.json's
 * bos_token, eos_token, ... as strings or {"content": ...}. */
static cJSON *special_tokens(const char *model_dir)
{
    char path[4096], *text;
    size_t len;
    errbuf e;
    cJSON *vars = cJSON_CreateObject();
    int w = snprintf(path, sizeof path, "%s/tokenizer_config.json", model_dir);
    if (!vars || w < 0 || (size_t)w >= sizeof path || file_read_regular(path, &text, &len, &e))
        return vars;
    cJSON *root = cJSON_ParseWithLength(text, len);
    free(text);
    static const char *const names[] = {"bos_token", "eos_token", "unk_token", "pad_token",
                                        "sep_token", "cls_token", "mask_token"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(root, names[i]);
        if (cJSON_IsObject(v))
            v = cJSON_GetObjectItemCaseSensitive(v, "content");
        if (cJSON_IsString(v) && v->valuestring)
            cJSON_AddStringToObject(vars, names[i], v->valuestring);
    }
    cJSON_Delete(root);
    return vars;
}

/* A template text (freed here) through the engine, with the model's special tokens. */
static int interpret(chat_template *t, char *text, const char *where, const char *model_dir, errbuf *e)
{
    t->jinja = jinja_compile(text, strlen(text), e);
    int k2 = strstr(text, "<|im_middle|>") != NULL;
    int thinking = k2 && strstr(text, "<think>") != NULL;
    free(text);
    if (!t->jinja)
        return err_prefix(e, "%s: ", where);
    t->vars = special_tokens(model_dir);
    snprintf(t->label, sizeof t->label, "%s, interpreted (%s)", where,
             thinking ? "Kimi-K2-Thinking style"
             : k2     ? "Kimi-K2-Instruct style"
                      : "not a Kimi template");
    return 0;
}

static int open_template(const char *model_dir, const char *name, chat_template *t, errbuf *e);

int chat_template_open(const char *model_dir, const char *name, chat_template *t, errbuf *e)
{
    memset(t, 0, sizeof *t);
    int rc = open_template(model_dir, name, t, e);
    if (rc == 0 && !t->vars)
        t->vars = special_tokens(model_dir); /* (also for a request's own template) */
    if (rc == 0 && model_dir) {
        char path[4096];
        struct stat st;
        snprintf(path, sizeof path, "%s/tiktoken.model", model_dir);
        t->sort_tools = stat(path, &st) == 0;
    }
    if (rc)
        chat_template_close(t);
    return rc;
}

static int open_template(const char *model_dir, const char *name, chat_template *t, errbuf *e)
{
    int forced = name && !strcmp(name, "jinja");
    char *text, where[4200];
    size_t len;
    if (name && strcmp(name, "auto") && !forced) {
        errbuf why;
        if (chat_template_from_name(name, &t->kind, &why) == 0) {
            snprintf(t->label, sizeof t->label, "%s", chat_template_name(t->kind));
            return 0;
        }
        struct stat st;
        int there = stat(name, &st) == 0;
        if (there && S_ISDIR(st.st_mode))
            return err_set(e, "--chat-template: %.4000s is a directory, not a template file", name);
        if (!there || !S_ISREG(st.st_mode))
            return err_set(e,
                           "--chat-template: unknown chat format '%.60s' (known: auto, kimi-k2.5, "
                           "kimi-k2.5-kite, jinja, or the path of a template file)",
                           name);
        if (file_read_regular(name, &text, &len, e))
            return err_prefix(e, "--chat-template: ");
        if (len == 0) {
            free(text);
            return err_set(e, "--chat-template: %.4000s is empty", name);
        }
        snprintf(where, sizeof where, "%.4000s", name);
        return interpret(t, text, where, model_dir, e);
    }
    if (chat_template_find(model_dir, &text, where, sizeof where, e))
        return -1;
    if (!text) {
        if (forced)
            return err_set(e,
                           "--chat-template jinja: %s has no chat template (chat_template.jinja or "
                           "tokenizer_config.json's chat_template)",
                           model_dir);
        t->kind = CHAT_TEMPLATE_K25;
        snprintf(t->label, sizeof t->label, "%s (the model has no template)", chat_template_name(t->kind));
        return 0;
    }
    errbuf why;
    if (!forced && chat_template_detect(text, &t->kind, &why) == 0) {
        free(text);
        snprintf(t->label, sizeof t->label, "%s", chat_template_name(t->kind));
        return 0;
    }
    return interpret(t, text, where, model_dir, e);
}

void chat_template_close(chat_template *t)
{
    jinja_free(t->jinja);
    cJSON_Delete(t->vars);
    memset(t, 0, sizeof *t);
}

/* Kimi's apply_chat_template deep-sorts the tools' object keys before the
 * template sees them (the native renderer does the same); other models'
 * templates see them in the request's order, as transformers gives them. */
static void sort_keys(cJSON *v)
{
    if (!v)
        return;
    for (cJSON *c = v->child; c; c = c->next)
        sort_keys(c);
    if (!cJSON_IsObject(v))
        return;
    /* insertion sort of the member list by key (stable: a repeated key keeps its order) */
    cJSON *sorted = NULL;
    for (cJSON *c = v->child, *next; c; c = next) {
        next = c->next;
        cJSON **at = &sorted;
        while (*at && strcmp((*at)->string ? (*at)->string : "", c->string ? c->string : "") <= 0)
            at = &(*at)->next;
        c->next = *at;
        *at = c;
    }
    cJSON *prev = NULL;
    for (cJSON *c = sorted; c; c = c->next) {
        c->prev = prev;
        prev = c;
    }
    if (sorted)
        sorted->prev = prev; /* cJSON keeps the last member in the first one's prev */
    v->child = sorted;
}

static int add_ref(cJSON *ctx, const char *key, const cJSON *v)
{
    return cJSON_AddItemReferenceToObject(ctx, key, (cJSON *)v) ? 0 : -1;
}

int chat_template_render(const chat_template *t, const cJSON *messages, const cJSON *tools,
                         const chat_options *opt, char **out, size_t *out_len, errbuf *e)
{
    if (!t->jinja)
        return chat_format_render(t->kind, messages, tools, opt, out, out_len, e);
    *out = NULL;
    chat_options dflt;
    if (!opt) {
        chat_options_default(&dflt);
        opt = &dflt;
    }
    if (!cJSON_IsArray(messages))
        return err_set(e, "messages: expected an array");
    cJSON *ctx = cJSON_CreateObject(), *sorted = NULL;
    int rc = ctx ? 0 : -1;
    if (!rc)
        rc = add_ref(ctx, "messages", messages);
    if (!rc && tools && !cJSON_IsNull(tools)) {
        if (!t->sort_tools)
            rc = add_ref(ctx, "tools", tools);
        else if (!(sorted = cJSON_Duplicate(tools, 1)))
            rc = -1;
        sort_keys(sorted);
        if (!rc && sorted)
            rc = add_ref(ctx, "tools", sorted);
    }
    if (!rc &&
        (!cJSON_AddBoolToObject(ctx, "add_generation_prompt", opt->add_generation_prompt) ||
         (opt->thinking_set && !cJSON_AddBoolToObject(ctx, "thinking", opt->thinking)) ||
         (opt->preserve_set && !cJSON_AddBoolToObject(ctx, "preserve_thinking", opt->preserve_thinking)) ||
         (opt->tools_ts_str && *opt->tools_ts_str &&
          !cJSON_AddStringToObject(ctx, "tools_ts_str", opt->tools_ts_str))))
        rc = -1;
    /* the request's other chat_template_kwargs, then the special tokens, where
     * the names above have not been taken (as Hugging Face merges them) */
    for (const cJSON *v = opt->vars ? opt->vars->child : NULL; v && !rc; v = v->next)
        if (v->string && !cJSON_GetObjectItemCaseSensitive(ctx, v->string) && strcmp(v->string, "documents"))
            rc = add_ref(ctx, v->string, v);
    for (const cJSON *v = t->vars ? t->vars->child : NULL; v && !rc; v = v->next)
        if (!cJSON_GetObjectItemCaseSensitive(ctx, v->string))
            rc = add_ref(ctx, v->string, v);
    if (rc)
        err_set(e, "chat template: out of memory");
    else
        rc = jinja_render(t->jinja, ctx, out, out_len, e);
    cJSON_Delete(ctx);
    cJSON_Delete(sorted);
    return rc;
}

static int ends_with(const char *text, size_t len, const char *tail)
{
    size_t n = strlen(tail);
    return len >= n && !memcmp(text + len - n, tail, n);
}

reasoning_start chat_prompt_reasoning(const char *text, size_t len)
{
    while (len && (text[len - 1] == '\n' || text[len - 1] == ' '))
        len--;
    return ends_with(text, len, "<think>") ? REASONING_OPEN
           : ends_with(text, len, "</think>") ? REASONING_CLOSED
                                              : REASONING_MODEL;
}

/* The length of p[0, n)'s whitespace at its end (from its start when
 * at_start), as Python's strip takes it. */
static size_t py_space_run(const char *p, size_t n, int at_start)
{
    size_t run = 0, k;
    uint32_t c;
    while (run < n && (k = at_start ? utf8_char_at(p + run, n - run, &c) : utf8_char_before(p, n - run, &c)) &&
           unicode_is_space(c))
        run += k;
    return run;
}

/* The marker transformers appends to the last message's text to find where
 * the template printed its end. */
#define CONTINUE_TAG "CONTINUE_FINAL_MESSAGE_TAG "

/* The string item holding the last message's text: its content, or its last
 * part with a "text"; NULL when there is none. */
static cJSON *final_text(cJSON *messages)
{
    cJSON *last = messages ? messages->child : NULL;
    while (last && last->next)
        last = last->next;
    cJSON *content = cJSON_GetObjectItemCaseSensitive(last, "content"), *found = NULL;
    if (cJSON_IsString(content))
        return content;
    if (cJSON_IsArray(content))
        for (cJSON *part = content->child; part; part = part->next) {
            cJSON *t = cJSON_GetObjectItemCaseSensitive(part, "text");
            if (cJSON_IsString(t))
                found = t;
        }
    return found;
}

static int contains(const char *text, size_t len, const char *s, size_t n, size_t *last)
{
    int hit = 0;
    for (size_t i = 0; i + n <= len; i++)
        if (!memcmp(text + i, s, n)) {
            *last = i;
            hit = 1;
        }
    return hit;
}

int chat_template_render_continue(const chat_template *t, const cJSON *messages, const cJSON *tools,
                                  const chat_options *opt, char **out, size_t *out_len, errbuf *e)
{
    *out = NULL;
    cJSON *copy = cJSON_Duplicate(messages, 1);
    cJSON *text = final_text(copy);
    if (!text) {
        cJSON_Delete(copy);
        return err_set(e, "continue_final_message: the last message has no text to continue");
    }
    size_t n = strlen(text->valuestring), lead = 0, trail = n;
    char *final = strdup(text->valuestring), *tagged = malloc(n + sizeof CONTINUE_TAG);
    if (tagged) {
        memcpy(tagged, text->valuestring, n);
        memcpy(tagged + n, CONTINUE_TAG, sizeof CONTINUE_TAG);
    }
    int rc = final && tagged && cJSON_SetValuestring(text, tagged) ? 0 : err_set(e, "out of memory");
    free(tagged);
    size_t len = 0;
    if (!rc)
        rc = chat_template_render(t, copy, tools, opt, out, &len, e);
    cJSON_Delete(copy);
    if (final) {
        lead = py_space_run(final, n, 1);
        trail = lead == n ? n : n - py_space_run(final, n, 0);
    }
    size_t at = 0, tag_at = 0, tag_n = sizeof CONTINUE_TAG - 2; /* the tag without its space */
    if (!rc && (!contains(*out, len, final + lead, trail - lead, &at) ||
                !contains(*out, len, CONTINUE_TAG, tag_n, &tag_at)))
        rc = err_set(e, "continue_final_message: the chat template's prompt does not hold the last message's "
                        "text as it was given");
    free(final);
    if (rc) {
        free(*out);
        *out = NULL;
        return -1;
    }
    /* the tag as appended: the template kept the text's end as it is; else it
     * trimmed trailing whitespace, which goes from the text's end too */
    int kept = tag_at + tag_n < len && (*out)[tag_at + tag_n] == ' ';
    len = tag_at;
    if (!kept)
        len -= py_space_run(*out, len, 0);
    (*out)[len] = 0;
    if (out_len)
        *out_len = len;
    return 0;
}
