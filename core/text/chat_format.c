/* chat_format: the Kimi K2.5-style chat template rendered natively, plus
 * template recognition and a Python-compatible JSON printer (see chat_format.h
 * for the input format and the semantic choices).
 *
 * The renderer mirrors chat_template.jinja statement by statement; the comments
 * quote the template lines they stand for. Whitespace is what trim_blocks +
 * lstrip_blocks leave of the template: nothing between markers, except the
 * "\n" after a media/video placeholder and after "## Return of {id}". */
#define _POSIX_C_SOURCE 200809L
#include "chat_format.h"

#include <ctype.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "core/base/fileutil.h"
#include "core/base/json_alloc.h"
#include "core/base/strbuf.h"

#define CHAT_JSON_MAX_DEPTH 1000

/* ---- growable output string --------------------------------------------- */

/* Hands the text over (an empty string when nothing was written). */
static int sb_finish(strbuf *b, char **out, size_t *out_len, errbuf *e)
{
    if (!b->failed && !b->p) {
        b->p = malloc(1);
        if (b->p)
            b->p[0] = 0;
        else
            b->failed = 1;
    }
    if (b->failed) {
        free(b->p);
        b->p = NULL;
        return err_set(e, "out of memory while rendering the chat prompt");
    }
    *out = b->p;
    if (out_len)
        *out_len = b->len;
    b->p = NULL;
    return 0;
}

/* ---- cJSON helpers -------------------------------------------------------- */

/* dict[key] with Python semantics for duplicated keys: the last one wins. */
static const cJSON *obj_get(const cJSON *obj, const char *key)
{
    const cJSON *found = NULL, *it;
    if (!cJSON_IsObject(obj))
        return NULL;
    cJSON_ArrayForEach(it, obj)
        if (it->string && strcmp(it->string, key) == 0)
            found = it;
    return found;
}

static const char *json_type_name(const cJSON *v)
{
    if (!v)
        return "nothing";
    switch (v->type & 0xff) {
    case cJSON_False:
    case cJSON_True: return "a boolean";
    case cJSON_NULL: return "null";
    case cJSON_Number: return "a number";
    case cJSON_String: return "a string";
    case cJSON_Array: return "an array";
    case cJSON_Object: return "an object";
    case cJSON_Raw: return "raw JSON";
    default: return "an invalid value";
    }
}

/* A printed field: a string, or "" when absent or null (as @huggingface/jinja
 * prints undefined and null). -1 for any other type. */
static int text_field(const cJSON *v, const char **out)
{
    if (!v || cJSON_IsNull(v)) {
        *out = "";
        return 0;
    }
    if (!cJSON_IsString(v) || !v->valuestring)
        return -1;
    *out = v->valuestring;
    return 0;
}

/* ---- Python json.dumps ------------------------------------------------------ */

/* repr(float) of a finite, non-integral (or huge) double: the shortest digits
 * that read back as x; fixed notation for 1e-4 <= |x| < 1e16, else d.ddde+XX. */
static void py_float_repr(double x, char *out, size_t cap)
{
    char tmp[48];
    int p;
    for (p = 1; p < 17; p++) {
        snprintf(tmp, sizeof tmp, "%.*e", p - 1, x);
        if (strtod(tmp, NULL) == x)
            break;
    }
    if (p == 17)
        snprintf(tmp, sizeof tmp, "%.16e", x);
    /* split "-d.ddde[+-]XX" into sign, digits, exponent */
    const char *s = tmp;
    int neg = 0;
    if (*s == '-') {
        neg = 1;
        s++;
    }
    char dig[32];
    int nd = 0;
    for (; *s && *s != 'e'; s++)
        if (*s >= '0' && *s <= '9' && nd < (int)sizeof dig - 1)
            dig[nd++] = *s;
    int exp10 = *s == 'e' ? atoi(s + 1) : 0;
    while (nd > 1 && dig[nd - 1] == '0')
        nd--;
    dig[nd] = 0;
    int decpt = exp10 + 1;      /* digits d1 d2 ... mean 0.d1d2... * 10^decpt */
    char body[64];
    size_t o = 0;
    if (decpt > -4 && decpt <= 16) {
        if (decpt <= 0) {
            body[o++] = '0';
            body[o++] = '.';
            for (int k = 0; k < -decpt; k++)
                body[o++] = '0';
            for (int k = 0; k < nd; k++)
                body[o++] = dig[k];
        } else if (decpt >= nd) {
            for (int k = 0; k < nd; k++)
                body[o++] = dig[k];
            for (int k = nd; k < decpt; k++)
                body[o++] = '0';
            body[o++] = '.';
            body[o++] = '0';
        } else {
            for (int k = 0; k < nd; k++) {
                if (k == decpt)
                    body[o++] = '.';
                body[o++] = dig[k];
            }
        }
        body[o] = 0;
    } else {
        int ex = decpt - 1;
        body[o++] = dig[0];
        if (nd > 1) {
            body[o++] = '.';
            for (int k = 1; k < nd; k++)
                body[o++] = dig[k];
        }
        snprintf(body + o, sizeof body - o, "e%c%02d", ex < 0 ? '-' : '+', ex < 0 ? -ex : ex);
    }
    snprintf(out, cap, "%s%s", neg ? "-" : "", body);
}

/* json.dumps of a Python float: repr, or NaN / Infinity / -Infinity. */
static void py_float(double x, char *out, size_t cap)
{
    if (isnan(x))
        snprintf(out, cap, "NaN");
    else if (isinf(x))
        snprintf(out, cap, x > 0 ? "Infinity" : "-Infinity");
    else
        py_float_repr(x, out, cap);
}

void chat_py_float_str(double x, char *out, size_t cap)
{
    if (isnan(x))
        snprintf(out, cap, "nan");
    else if (isinf(x))
        snprintf(out, cap, x > 0 ? "inf" : "-inf");
    else
        py_float_repr(x, out, cap);
}

/* A number without its source spelling (built in code, not parsed by
 * chat_json_parse): integral values below 2^63 print as Python ints. */
static void py_number(double x, char *out, size_t cap)
{
    if (x == 0)
        snprintf(out, cap, "0");
    else if (x == floor(x) && fabs(x) < 9223372036854775808.0)
        snprintf(out, cap, "%.0f", x);
    else
        py_float(x, out, cap);
}

/* Length of the JSON number (RFC 8259 grammar) at s[0, n), 0 when there is
 * none; *is_float tells whether it has a fraction or exponent, which is what
 * makes json.loads return a float rather than an int. */
static size_t json_number_len(const char *s, size_t n, int *is_float)
{
    size_t i = 0;
    *is_float = 0;
    if (i < n && s[i] == '-')
        i++;
    if (i >= n || s[i] < '0' || s[i] > '9')
        return 0;
    if (s[i] == '0')
        i++;
    else
        while (i < n && s[i] >= '0' && s[i] <= '9')
            i++;
    if (i < n && s[i] == '.') {
        if (i + 1 >= n || s[i + 1] < '0' || s[i + 1] > '9')
            return 0;
        for (i++; i < n && s[i] >= '0' && s[i] <= '9'; i++)
            ;
        *is_float = 1;
    }
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        size_t k = i + 1;
        if (k < n && (s[k] == '+' || s[k] == '-'))
            k++;
        if (k >= n || s[k] < '0' || s[k] > '9')
            return 0;
        for (; k < n && s[k] >= '0' && s[k] <= '9'; k++)
            ;
        i = k;
        *is_float = 1;
    }
    return i;
}

/* The next number token of text[*pos, len) outside strings: its start and
 * length; -1 when there is none. */
static long next_number_token(const char *text, size_t len, size_t *pos, size_t *tok_len)
{
    size_t i = *pos;
    while (i < len) {
        char ch = text[i];
        if (ch == '"') {
            for (i++; i < len && text[i] != '"'; i++)
                if (text[i] == '\\')
                    i++;
            i++;
        } else if (ch == '-' || (ch >= '0' && ch <= '9')) {
            size_t k = i;
            while (k < len && strchr("+-.eE0123456789", text[k]) && text[k])
                k++;
            *tok_len = k - i;
            *pos = k;
            return (long)i;
        } else {
            i++;
        }
    }
    return -1;
}

/* Walks v in document order (the order cJSON parsed it in, duplicate keys
 * included) and gives each number the spelling of the matching token. 1 with
 * *bad at a token outside RFC 8259's grammar (cJSON takes "01" and "1."),
 * -1 when memory runs out. */
static int keep_number_spelling(cJSON *v, const char *text, size_t len, size_t *pos, size_t *bad)
{
    for (; v; v = v->next) {
        if (cJSON_IsNumber(v)) {
            size_t tl = 0;
            long at = next_number_token(text, len, pos, &tl);
            int is_float;
            if (at < 0)
                return 0;   /* cannot happen for cJSON's own input; print from the double */
            if (json_number_len(text + at, tl, &is_float) != tl) {
                *bad = (size_t)at;
                return 1;
            }
            if (!v->valuestring && !(v->valuestring = strndup(text + at, tl))) {
                json_alloc_note_failure();
                return -1;
            }
        }
        int rc = v->child ? keep_number_spelling(v->child, text, len, pos, bad) : 0;
        if (rc)
            return rc;
    }
    return 0;
}

/* Offset of the first byte that json.loads refuses and cJSON takes, len when
 * none: a byte below 0x20 (any inside a string; outside, any but tab, CR and
 * LF: a NUL cut a string short), and a \u escape without four hex digits
 * (cJSON reads it as U+0000, cutting the string there). */
static size_t control_byte_at(const char *t, size_t len)
{
    int in_string = 0;
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)t[i];
        if (in_string && c == '\\') {
            if (++i < len && (unsigned char)t[i] < 0x20)
                return i;
            for (int k = 1; i < len && t[i] == 'u' && k <= 4; k++)
                if (i + k < len && !isxdigit((unsigned char)t[i + k]))
                    return i + k;
        } else if (c == '"') {
            in_string = !in_string;
        } else if (c < 0x20 && (in_string || (c != '\t' && c != '\r' && c != '\n'))) {
            return i;
        }
    }
    return len;
}

cJSON *chat_json_parse(const char *text, size_t len, const char **end)
{
    size_t control = control_byte_at(text, len);
    if (control < len) {
        if (end)
            *end = text + control;
        return NULL;
    }
    const char *stop = NULL;
    json_alloc_reset();
    cJSON *root = cJSON_ParseWithLengthOpts(text, len, &stop, 0);
    if (end)
        *end = stop;
    if (!root)
        return NULL;
    size_t at = (size_t)(stop - text), pos = 0, bad = 0;
    while (at < len && strchr(" \t\r\n", text[at]) && text[at])
        at++;
    int rc = at < len ? 1 : keep_number_spelling(root, text, len, &pos, &bad);
    if (rc) {
        cJSON_Delete(root);
        if (end)
            *end = at < len ? text + at : rc > 0 ? text + bad : NULL;
        return NULL;
    }
    return root;
}

const char *chat_py_number_spelled(const char *spelling, char *num, size_t cap)
{
    int is_float;
    json_number_len(spelling, strlen(spelling), &is_float);
    if (is_float) {
        py_float(strtod(spelling, NULL), num, cap);
        return num;
    }
    return strcmp(spelling, "-0") ? spelling : "0";
}

/* A JSON string the way json.dumps(ensure_ascii=False) writes it: only '"',
 * '\\' and C0 controls are escaped; everything else is copied as is. */
static void json_put_string(strbuf *b, const char *s)
{
    strbuf_put(b, "\"", 1);
    const char *run = s;
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c >= 0x20 && c != '"' && c != '\\')
            continue;
        strbuf_put(b, run, (size_t)(s - run));
        run = s + 1;
        char esc[8];
        switch (c) {
        case '"': strbuf_put(b, "\\\"", 2); break;
        case '\\': strbuf_put(b, "\\\\", 2); break;
        case '\n': strbuf_put(b, "\\n", 2); break;
        case '\r': strbuf_put(b, "\\r", 2); break;
        case '\t': strbuf_put(b, "\\t", 2); break;
        case '\b': strbuf_put(b, "\\b", 2); break;
        case '\f': strbuf_put(b, "\\f", 2); break;
        default:
            snprintf(esc, sizeof esc, "\\u%04x", c);
            strbuf_put(b, esc, 6);
        }
    }
    strbuf_put(b, run, (size_t)(s - run));
    strbuf_put(b, "\"", 1);
}

typedef struct key_ent {
    const char *key;
    size_t idx;
    const cJSON *item;
} key_ent;

static int key_ent_cmp(const void *a, const void *b)
{
    const key_ent *x = a, *y = b;
    int c = strcmp(x->key, y->key);
    if (c)
        return c;
    return x->idx < y->idx ? -1 : x->idx > y->idx;
}

static int json_dump_value(strbuf *b, const cJSON *v, int flags, int depth, errbuf *e);

/* An object as a Python dict built by json.loads: one entry per distinct key,
 * at the position of its first occurrence, with the value of its last one. */
static int json_dump_object(strbuf *b, const cJSON *v, int flags, int depth, errbuf *e)
{
    const char *item_sep = flags & CHAT_JSON_COMPACT ? "," : ", ";
    const char *key_sep = flags & CHAT_JSON_COMPACT ? ":" : ": ";
    size_t n = 0;
    const cJSON *it;
    cJSON_ArrayForEach(it, v) n++;
    if (n == 0) {
        strbuf_put(b, "{}", 2);
        return 0;
    }
    key_ent *ents = malloc(n * sizeof *ents);
    const cJSON **keep = calloc(n, sizeof *keep);   /* by position: value to print */
    if (!ents || !keep) {
        free(ents);
        free(keep);
        return err_set(e, "out of memory while printing JSON");
    }
    size_t k = 0;
    cJSON_ArrayForEach(it, v) {
        ents[k].key = it->string ? it->string : "";
        ents[k].idx = k;
        ents[k].item = it;
        k++;
    }
    qsort(ents, n, sizeof *ents, key_ent_cmp);
    /* groups of equal keys: the first keeps its place, the last gives the value;
     * the group's first entry in ents is moved to the front when sorting keys */
    size_t n_out = 0;
    for (size_t g = 0; g < n;) {
        size_t h = g + 1;
        while (h < n && strcmp(ents[h].key, ents[g].key) == 0)
            h++;
        if (flags & CHAT_JSON_SORT_KEYS) {
            ents[n_out].key = ents[g].key;
            ents[n_out].item = ents[h - 1].item;
            n_out++;
        } else {
            keep[ents[g].idx] = ents[h - 1].item;
        }
        g = h;
    }
    int rc = 0;
    strbuf_put(b, "{", 1);
    int first = 1;
    if (flags & CHAT_JSON_SORT_KEYS) {
        for (size_t i = 0; i < n_out && rc == 0; i++) {
            if (!first)
                strbuf_puts(b, item_sep);
            first = 0;
            json_put_string(b, ents[i].key);
            strbuf_puts(b, key_sep);
            rc = json_dump_value(b, ents[i].item, flags, depth + 1, e);
        }
    } else {
        k = 0;
        cJSON_ArrayForEach(it, v) {
            if (rc)
                break;
            if (keep[k]) {
                if (!first)
                    strbuf_puts(b, item_sep);
                first = 0;
                json_put_string(b, it->string ? it->string : "");
                strbuf_puts(b, key_sep);
                rc = json_dump_value(b, keep[k], flags, depth + 1, e);
            }
            k++;
        }
    }
    strbuf_put(b, "}", 1);
    free(ents);
    free(keep);
    return rc;
}

static int json_dump_value(strbuf *b, const cJSON *v, int flags, int depth, errbuf *e)
{
    if (depth > CHAT_JSON_MAX_DEPTH)
        return err_set(e, "JSON nested deeper than %d levels", CHAT_JSON_MAX_DEPTH);
    char num[64];
    const cJSON *it;
    switch (v->type & 0xff) {
    case cJSON_False: strbuf_put(b, "false", 5); return 0;
    case cJSON_True: strbuf_put(b, "true", 4); return 0;
    case cJSON_NULL: strbuf_put(b, "null", 4); return 0;
    case cJSON_Number:
        if (v->valuestring) {
            strbuf_puts(b, chat_py_number_spelled(v->valuestring, num, sizeof num));
        } else {
            py_number(v->valuedouble, num, sizeof num);
            strbuf_puts(b, num);
        }
        return 0;
    case cJSON_String:
        json_put_string(b, v->valuestring ? v->valuestring : "");
        return 0;
    case cJSON_Raw:
        strbuf_puts(b, v->valuestring ? v->valuestring : "null");
        return 0;
    case cJSON_Array: {
        strbuf_put(b, "[", 1);
        int first = 1;
        cJSON_ArrayForEach(it, v) {
            if (!first)
                strbuf_puts(b, flags & CHAT_JSON_COMPACT ? "," : ", ");
            first = 0;
            if (json_dump_value(b, it, flags, depth + 1, e))
                return -1;
        }
        strbuf_put(b, "]", 1);
        return 0;
    }
    case cJSON_Object:
        return json_dump_object(b, v, flags, depth, e);
    default:
        return err_set(e, "cannot print an invalid JSON value");
    }
}

int chat_json_dump(const cJSON *v, int flags, char **out, size_t *out_len, errbuf *e)
{
    *out = NULL;
    if (!v)
        return err_set(e, "no JSON value to print");
    strbuf b = {0};
    if (json_dump_value(&b, v, flags, 0, e)) {
        free(b.p);
        return -1;
    }
    return sb_finish(&b, out, out_len, e);
}

/* ---- options ------------------------------------------------------------------ */

void chat_options_default(chat_options *o)
{
    o->add_generation_prompt = 1;
    o->thinking = 1;
    o->preserve_thinking = 0;
    o->tools_ts_str = NULL;
    o->vars = NULL;
}

static int bool_option(const cJSON *obj, const char *key, int *dst, errbuf *e)
{
    const cJSON *v = obj_get(obj, key);
    if (!v || cJSON_IsNull(v))
        return 0;
    if (!cJSON_IsBool(v))
        return err_set(e, "%s: expected true or false, got %s", key, json_type_name(v));
    *dst = cJSON_IsTrue(v);
    return 0;
}

int chat_options_from_json(const cJSON *obj, chat_options *o, errbuf *e)
{
    if (!cJSON_IsObject(obj))
        return err_set(e, "chat options: expected an object, got %s", json_type_name(obj));
    o->thinking_set |= obj_get(obj, "thinking") && !cJSON_IsNull(obj_get(obj, "thinking"));
    o->preserve_set |= obj_get(obj, "preserve_thinking") && !cJSON_IsNull(obj_get(obj, "preserve_thinking"));
    if (bool_option(obj, "add_generation_prompt", &o->add_generation_prompt, e) ||
        bool_option(obj, "thinking", &o->thinking, e) ||
        bool_option(obj, "preserve_thinking", &o->preserve_thinking, e))
        return -1;
    const cJSON *ts = obj_get(obj, "tools_ts_str");
    if (ts) {
        if (cJSON_IsNull(ts))
            o->tools_ts_str = NULL;
        else if (cJSON_IsString(ts) && ts->valuestring)
            o->tools_ts_str = ts->valuestring;
        else
            return err_set(e, "tools_ts_str: expected a string or null, got %s", json_type_name(ts));
    }
    return 0;
}

/* ---- rendering ------------------------------------------------------------------ */

typedef struct render {
    strbuf b;
    chat_template_kind kind;
    errbuf *e;
} render;

static const char *video_placeholder(chat_template_kind kind)
{
    return kind == CHAT_TEMPLATE_K25_MOONSHOT ? "<|kimi_k25_video_placeholder|>"
                                              : "<|kite_video_placeholder|>";
}

/* The role of message i (validated up front). */
static const char *msg_role(const cJSON *m)
{
    return obj_get(m, "role")->valuestring;
}

/* message.get('tool_calls') when truthy (a non-empty array), else NULL. */
static int msg_tool_calls(const cJSON *m, int i, const cJSON **out, errbuf *e)
{
    const cJSON *tc = obj_get(m, "tool_calls");
    *out = NULL;
    if (!tc || cJSON_IsNull(tc))
        return 0;
    if (!cJSON_IsArray(tc))
        return err_set(e, "messages[%d].tool_calls: expected an array or null, got %s", i,
                       json_type_name(tc));
    if (tc->child)
        *out = tc;
    return 0;
}

/* macro render_content(msg) */
static int render_content(render *r, const cJSON *m, int i)
{
    const cJSON *c = obj_get(m, "content");
    if (!c || cJSON_IsNull(c))
        return 0;
    if (cJSON_IsString(c)) {
        strbuf_puts(&r->b, c->valuestring);
        return 0;
    }
    if (!cJSON_IsArray(c))
        return err_set(r->e, "messages[%d].content: expected a string, an array of parts or null, got %s",
                       i, json_type_name(c));
    int j = 0;
    const cJSON *part;
    cJSON_ArrayForEach(part, c) {
        if (!cJSON_IsObject(part))
            return err_set(r->e, "messages[%d].content[%d]: expected a content part object, got %s", i, j,
                           json_type_name(part));
        const cJSON *t = obj_get(part, "type");
        const char *type = cJSON_IsString(t) ? t->valuestring : NULL;    /* may be NULL */
        if (type && (strcmp(type, "image") == 0 || strcmp(type, "image_url") == 0)) {
            strbuf_puts(&r->b, "<|media_begin|>image<|media_content|><|media_pad|><|media_end|>\n");
        } else if (type && (strcmp(type, "video") == 0 || strcmp(type, "video_url") == 0)) {
            strbuf_puts(&r->b, video_placeholder(r->kind));
            strbuf_puts(&r->b, "\n");
        } else {
            /* {{ content['text'] }}: absent or null prints nothing. A text or
             * refusal part may lack it (OpenAI clients send an assistant's
             * refusal back as {"type": "refusal", "refusal": ...}, which the
             * template drops); another part without text carries something
             * else (audio, a file) that would be lost without a word. */
            const cJSON *text = obj_get(part, "text");
            int may_lack = type && (strcmp(type, "text") == 0 || strcmp(type, "refusal") == 0);
            if (cJSON_IsString(text))
                strbuf_puts(&r->b, text->valuestring);
            else if (!((!text || cJSON_IsNull(text)) && may_lack))
                return err_set(r->e,
                               "messages[%d].content[%d]: a part of type \"%s\" needs a string \"text\" "
                               "(got %s)",
                               i, j, type ? type : "(none)", json_type_name(text));
        }
        j++;
    }
    return 0;
}

/* macro set_roles(message): role_name = message.get('name') or message['role'] */
static int render_role(render *r, const cJSON *m, int i)
{
    const char *role = msg_role(m), *name = role;
    const cJSON *nm = obj_get(m, "name");
    if (nm && !cJSON_IsNull(nm)) {
        if (!cJSON_IsString(nm))
            return err_set(r->e, "messages[%d].name: expected a string, got %s", i, json_type_name(nm));
        if (nm->valuestring && nm->valuestring[0])
            name = nm->valuestring;
    }
    if (strcmp(role, "user") == 0)
        strbuf_puts(&r->b, "<|im_user|>");
    else if (strcmp(role, "assistant") == 0)
        strbuf_puts(&r->b, "<|im_assistant|>");
    else
        strbuf_puts(&r->b, "<|im_system|>");
    strbuf_puts(&r->b, name);
    strbuf_puts(&r->b, "<|im_middle|>");
    return 0;
}

/* macro render_toolcalls(message) */
static int render_toolcalls(render *r, const cJSON *calls, int i)
{
    strbuf_puts(&r->b, "<|tool_calls_section_begin|>");
    int j = 0;
    const cJSON *tc;
    cJSON_ArrayForEach(tc, calls) {
        if (!cJSON_IsObject(tc))
            return err_set(r->e, "messages[%d].tool_calls[%d]: expected an object, got %s", i, j,
                           json_type_name(tc));
        const char *id;
        const cJSON *idv = obj_get(tc, "id");
        if (text_field(idv, &id))
            return err_set(r->e, "messages[%d].tool_calls[%d].id: expected a string, got %s", i, j,
                           json_type_name(idv));
        const cJSON *fn = obj_get(tc, "function");
        if (!cJSON_IsObject(fn))
            return err_set(r->e, "messages[%d].tool_calls[%d].function: expected an object, got %s", i, j,
                           json_type_name(fn));
        const cJSON *args = obj_get(fn, "arguments");
        if (!args)
            return err_set(r->e, "messages[%d].tool_calls[%d].function.arguments: missing", i, j);
        strbuf_puts(&r->b, "<|tool_call_begin|>");
        strbuf_puts(&r->b, id);
        strbuf_puts(&r->b, "<|tool_call_argument_begin|>");
        if (cJSON_IsString(args)) {
            strbuf_puts(&r->b, args->valuestring);
        } else if (json_dump_value(&r->b, args, 0, 0, r->e)) {
            return err_prefix(r->e, "messages[%d].tool_calls[%d].function.arguments: ", i, j);
        }
        strbuf_puts(&r->b, "<|tool_call_end|>");
        j++;
    }
    strbuf_puts(&r->b, "<|tool_calls_section_end|>");
    return 0;
}

/* One message of either loop; hist: the message is in hist_msgs. */
static int render_message(render *r, const cJSON *m, int i, int hist, const chat_options *opt)
{
    if (render_role(r, m, i))
        return -1;
    const char *role = msg_role(m);
    if (strcmp(role, "assistant") == 0) {
        /* hist: <think></think>; suffix: the same when thinking is false and
         * preserve_thinking is false, else <think>{{rc}}</think> */
        if (hist || (!opt->thinking && !opt->preserve_thinking)) {
            strbuf_puts(&r->b, "<think></think>");
        } else {
            /* rc = message.get('reasoning', message.get('reasoning_content', '')) */
            const char *field = "reasoning", *rc;
            const cJSON *rv = obj_get(m, "reasoning");
            if (!rv) {
                field = "reasoning_content";
                rv = obj_get(m, field);
            }
            if (text_field(rv, &rc))
                return err_set(r->e, "messages[%d].%s: expected a string or null, got %s", i, field,
                               json_type_name(rv));
            strbuf_puts(&r->b, "<think>");
            strbuf_puts(&r->b, rc);
            strbuf_puts(&r->b, "</think>");
        }
        if (render_content(r, m, i))
            return -1;
        const cJSON *calls;
        if (msg_tool_calls(m, i, &calls, r->e))
            return -1;
        if (calls && render_toolcalls(r, calls, i))
            return -1;
    } else if (strcmp(role, "tool") == 0) {
        /* ## Return of {{ tool_call_id }}\n{{render_content(message)}} */
        const char *id;
        const cJSON *idv = obj_get(m, "tool_call_id");
        if (text_field(idv, &id))
            return err_set(r->e, "messages[%d].tool_call_id: expected a string, got %s", i,
                           json_type_name(idv));
        strbuf_puts(&r->b, "## Return of ");
        strbuf_puts(&r->b, id);
        strbuf_puts(&r->b, "\n");
        if (render_content(r, m, i))
            return -1;
    } else if (render_content(r, m, i)) {
        /* elif message['content'] is not none: render_content prints nothing
         * for a null or absent content either way */
        return -1;
    }
    strbuf_puts(&r->b, "<|im_end|>");
    return 0;
}

int chat_format_render(chat_template_kind kind, const cJSON *messages, const cJSON *tools,
                       const chat_options *opt, char **out, size_t *out_len, errbuf *e)
{
    *out = NULL;
    if (out_len)
        *out_len = 0;
    chat_options defaults;
    if (!opt) {
        chat_options_default(&defaults);
        opt = &defaults;
    }
    if (kind != CHAT_TEMPLATE_K25 && kind != CHAT_TEMPLATE_K25_MOONSHOT)
        return err_set(e, "chat template kind %d is not known", (int)kind);
    if (!cJSON_IsArray(messages))
        return err_set(e, "messages: expected an array of message objects, got %s",
                       json_type_name(messages));
    if (tools && !cJSON_IsNull(tools) && !cJSON_IsArray(tools))
        return err_set(e, "tools: expected an array or null, got %s", json_type_name(tools));

    /* every message must be an object with a string role */
    int n = 0;
    const cJSON *m;
    cJSON_ArrayForEach(m, messages) {
        if (!cJSON_IsObject(m))
            return err_set(e, "messages[%d]: expected an object, got %s", n, json_type_name(m));
        const cJSON *role = obj_get(m, "role");
        if (!role)
            return err_set(e, "messages[%d]: missing \"role\"", n);
        if (!cJSON_IsString(role) || !role->valuestring)
            return err_set(e, "messages[%d].role: expected a string, got %s", n, json_type_name(role));
        n++;
    }
    const cJSON **msgs = malloc((n ? (size_t)n : 1) * sizeof *msgs);
    if (!msgs)
        return err_set(e, "out of memory while rendering the chat prompt");
    int k = 0;
    cJSON_ArrayForEach(m, messages) msgs[k++] = m;

    /* last assistant message without tool calls; -1 with preserve_thinking */
    int last_plain = -1;
    if (!opt->preserve_thinking) {
        for (int i = n - 1; i >= 0; i--) {
            if (strcmp(msg_role(msgs[i]), "assistant") != 0)
                continue;
            const cJSON *calls;
            if (msg_tool_calls(msgs[i], i, &calls, e)) {
                free(msgs);
                return -1;
            }
            if (!calls) {
                last_plain = i;
                break;
            }
        }
    }

    render r = {.kind = kind, .e = e};
    /* {%- if tools %}: tools_ts_str, or the deep-sorted tools as compact JSON */
    if (cJSON_IsArray(tools) && tools->child) {
        strbuf_puts(&r.b, "<|im_system|>tool_declare<|im_middle|>");
        if (opt->tools_ts_str && opt->tools_ts_str[0]) {
            strbuf_puts(&r.b, opt->tools_ts_str);
        } else if (json_dump_value(&r.b, tools, CHAT_JSON_COMPACT | CHAT_JSON_SORT_KEYS, 0, e)) {
            err_prefix(e, "tools: ");
            goto fail;
        }
        strbuf_puts(&r.b, "<|im_end|>");
    }
    for (int i = 0; i < n; i++)
        if (render_message(&r, msgs[i], i, i <= last_plain, opt))
            goto fail;
    if (opt->add_generation_prompt)
        strbuf_puts(&r.b, opt->thinking ? "<|im_assistant|>assistant<|im_middle|><think>"
                                    : "<|im_assistant|>assistant<|im_middle|><think></think>");
    free(msgs);
    return sb_finish(&r.b, out, out_len, e);

fail:
    free(msgs);
    free(r.b.p);
    return -1;
}

/* ---- template recognition ---------------------------------------------------- */

int chat_template_from_name(const char *name, chat_template_kind *out, errbuf *e)
{
    if (!strcmp(name, "kimi-k2.5")) {
        *out = CHAT_TEMPLATE_K25_MOONSHOT;
        return 0;
    }
    if (!strcmp(name, "kimi-k2.5-kite")) {
        *out = CHAT_TEMPLATE_K25;
        return 0;
    }
    return err_set(e, "unknown chat format '%.60s' (known: kimi-k2.5, kimi-k2.5-kite)", name);
}

const char *chat_template_name(chat_template_kind kind)
{
    switch (kind) {
    case CHAT_TEMPLATE_K25: return "kimi-k2.5 (kite)";
    case CHAT_TEMPLATE_K25_MOONSHOT: return "kimi-k2.5";
    }
    return "unknown";
}

int chat_template_detect(const char *template_text, chat_template_kind *out, errbuf *e)
{
    static const char *const markers[] = {
        "<|im_user|>", "<|im_assistant|>", "<|im_system|>", "<|im_middle|>", "<|im_end|>",
        "tools_ts_str", "tool_declare", "<think>", "</think>", "preserve_thinking",
        "<|tool_calls_section_begin|>", "<|tool_call_begin|>", "<|tool_call_argument_begin|>",
        "<|media_begin|>", "## Return of",
    };
    if (!template_text)
        return err_set(e, "unsupported chat template: no template text");
    char missing[600];
    size_t o = 0;
    int n_missing = 0;
    missing[0] = 0;
    for (size_t i = 0; i < sizeof markers / sizeof markers[0]; i++) {
        if (strstr(template_text, markers[i]))
            continue;
        int w = snprintf(missing + o, sizeof missing - o, "%s%s", n_missing ? ", " : "", markers[i]);
        if (w > 0 && (size_t)w < sizeof missing - o)
            o += (size_t)w;
        n_missing++;
    }
    if (n_missing)
        return err_set(e, "unsupported chat template: missing %s (the markers of Kimi K2.5's template)",
                       missing);
    if (strstr(template_text, "<|kite_video_placeholder|>")) {
        *out = CHAT_TEMPLATE_K25;
        return 0;
    }
    if (strstr(template_text, "<|kimi_k25_video_placeholder|>")) {
        *out = CHAT_TEMPLATE_K25_MOONSHOT;
        return 0;
    }
    return err_set(e, "unsupported chat template: K2.5-style markers present but no known video "
                      "placeholder (<|kite_video_placeholder|> or <|kimi_k25_video_placeholder|>)");
}

static int path_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

int chat_template_find(const char *model_dir, char **text, char *where, size_t where_cap, errbuf *e)
{
    char path[4096];
    size_t len;
    *text = NULL;
    int w = snprintf(path, sizeof path, "%s/chat_template.jinja", model_dir);
    if (w < 0 || (size_t)w >= sizeof path)
        return err_set(e, "%s: model directory path too long", model_dir);
    if (path_exists(path)) {
        snprintf(where, where_cap, "%s", path);
        return file_read_regular(path, text, &len, e);
    }
    w = snprintf(path, sizeof path, "%s/tokenizer_config.json", model_dir);
    if (w < 0 || (size_t)w >= sizeof path)
        return err_set(e, "%s: model directory path too long", model_dir);
    if (!path_exists(path))
        return 0;
    char *json;
    if (file_read_regular(path, &json, &len, e))
        return -1;
    cJSON *root = cJSON_ParseWithLength(json, len);
    free(json);
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return err_set(e, "%s: not a JSON object", path);
    }
    const cJSON *ct = obj_get(root, "chat_template");
    const char *tpl = NULL;
    int rc = 0;
    if (cJSON_IsString(ct) && ct->valuestring) {
        tpl = ct->valuestring;
    } else if (cJSON_IsArray(ct)) {
        /* [{"name": "default", "template": "..."}, {"name": "tool_use", ...}] */
        const cJSON *it;
        cJSON_ArrayForEach(it, ct) {
            const cJSON *nm = obj_get(it, "name"), *t = obj_get(it, "template");
            if (cJSON_IsString(nm) && nm->valuestring && strcmp(nm->valuestring, "default") == 0 &&
                cJSON_IsString(t) && t->valuestring)
                tpl = t->valuestring;
        }
        if (!tpl)
            rc = err_set(e, "%s: chat_template is a list without a \"default\" template", path);
    } else if (ct && !cJSON_IsNull(ct)) {
        rc = err_set(e, "%s: chat_template: expected a string or a list, got %s", path, json_type_name(ct));
    }
    if (rc == 0 && tpl && !(*text = strdup(tpl)))
        rc = err_set(e, "%s: out of memory", path);
    snprintf(where, where_cap, "%s (chat_template)", path);
    cJSON_Delete(root);
    return rc;
}
