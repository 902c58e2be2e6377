/* synth_tokenizer: BPE training on the built-in corpus and the Kimi-format
 * tokenizer files (see synth_tokenizer.h). */
#define _POSIX_C_SOURCE 200809L
#include "synth_tokenizer.h"

#include <cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/base/fileutil.h"
#include "core/base/json_hf.h"

static const char corpus_text[] =
    "The quick brown fox jumps over the lazy dog. The dog did not seem to mind at all.\n"
    "Once upon a time there was a small village at the edge of a great forest.\n"
    "The people of the village were farmers, and every morning they went out to the fields.\n"
    "In the evening they came back home, cooked dinner and told stories by the fire.\n"
    "One day a young girl named Anna found a strange stone near the river.\n"
    "It was smooth and warm, and when she held it up to the light it began to glow.\n"
    "She ran home to show it to her mother, who was working in the kitchen.\n"
    "Her mother looked at the stone for a long time and then said nothing at all.\n"
    "The next morning the stone was gone, and nobody in the house knew where it was.\n"
    "Anna looked for it everywhere: under the bed, behind the door and in the garden.\n"
    "Water boils at one hundred degrees Celsius at sea level, but at lower temperatures "
    "on high mountains.\n"
    "The sun is a star, and the earth moves around it once every year.\n"
    "The moon moves around the earth, and we see it change its shape during the month.\n"
    "Plants need light, water and air to grow, and most of them also need good soil.\n"
    "Many animals sleep during the day and look for food when it is dark.\n"
    "A computer is a machine that follows a list of instructions called a program.\n"
    "Programs are written in programming languages such as C, Python or Rust.\n"
    "The program reads the input, computes a result and writes the output to a file.\n"
    "When the program has an error, the computer cannot run it until the error is fixed.\n"
    "Good programmers write small functions that each do one thing and do it well.\n"
    "They test their code often, because a test that fails early saves a lot of time later.\n"
    "A language model predicts the next word of a text from the words that came before it.\n"
    "It learns this by reading a very large amount of text and adjusting its weights.\n"
    "The model turns each word into a list of numbers, and then it mixes those numbers in "
    "many layers.\n"
    "At the end it gives a score to every word in its vocabulary and picks one of the best.\n"
    "Some models are so large that they do not fit into the memory of a single machine.\n"
    "Then the weights must be split, moved and loaded in parts while the model is running.\n"
    "Please open the window, it is getting very warm in this room.\n"
    "Could you tell me how to get to the train station from here?\n"
    "Turn left at the second street, walk past the bank and you will see it on your right.\n"
    "I would like a cup of tea with milk and a piece of apple cake, please.\n"
    "We are going to the market on Saturday to buy fresh fruit and vegetables.\n"
    "My brother plays the piano, and my sister is learning to play the violin.\n"
    "Our teacher asked us to write a short story about our summer holidays.\n"
    "I spent most of the summer with my grandparents, who live on a farm by the sea.\n"
    "Every morning we fed the chickens, and in the afternoon we went swimming.\n"
    "The weather was good most of the time, although it rained for a few days in August.\n"
    "History is the study of the past, of the people who lived before us and what they did.\n"
    "The first cities were built thousands of years ago near large rivers.\n"
    "People learned to write so that they could count goods, keep laws and remember events.\n"
    "Books were copied by hand for a long time, until the printing press made them cheaper.\n"
    "Today most of what we read is shown on a screen instead of printed on paper.\n"
    "Numbers are everywhere: there are seven days in a week and twelve months in a year.\n"
    "If you have three apples and you give two away, you have one apple left.\n"
    "The train leaves at ten past eight and arrives in the city at a quarter to eleven.\n"
    "It is important to drink enough water, to sleep well and to move a little every day.\n"
    "Doctors say that walking for half an hour each day is good for the heart.\n"
    "The library is open from nine in the morning until six in the evening.\n"
    "You can borrow up to five books at a time and keep them for three weeks.\n"
    "The museum has a large collection of paintings, old maps and ancient coins.\n"
    "On the top floor there is a small cafe with a beautiful view of the old town.\n"
    "The children played in the park until the sun went down and the lights came on.\n"
    "Their parents sat on a bench, talking quietly and watching them run around.\n"
    "Later that night it started to snow, and by morning the whole town was white.\n"
    "Nobody had expected so much snow so early in the year.\n"
    "The roads were closed, the schools stayed shut and everybody stayed at home.\n"
    "Some people went outside to build snowmen, while others read books by the window.\n"
    "A good question is often more useful than a quick answer.\n"
    "Think about the problem first, then write down what you know and what you need.\n"
    "Try a simple example, check the result and only then solve the general case.\n"
    "If something does not work, change one thing at a time and test again.\n"
    "The team finished the project on time, and everyone was happy with the result.\n"
    "They celebrated with a dinner at a restaurant near the office.\n"
    "The food was excellent, and the waiter brought them a free dessert at the end.\n"
    "After dinner they walked along the river and talked about their plans for next year.\n"
    "There is always something new to learn, and there is always something new to build.\n"
    "The old lighthouse stood on a rock at the end of the island, far from the harbour.\n"
    "For many years an old man lived there alone and kept the light burning every night.\n"
    "Ships passing in the dark could see the light and knew where the dangerous rocks were.\n"
    "When the storms came, the waves were higher than the houses of the fishermen.\n"
    "In the spring the birds returned from the south and built their nests under the roof.\n"
    "Science tries to explain the world by asking questions and testing the answers.\n"
    "A scientist makes a guess, designs an experiment and measures what happens.\n"
    "If the measurements do not agree with the guess, the guess has to be changed.\n"
    "Over time, careful experiments have taught us how light, heat and electricity behave.\n"
    "Electricity flows through a wire when there is a difference in voltage between its ends.\n"
    "Light travels faster than anything else, almost three hundred thousand kilometres a "
    "second.\n"
    "Sound is much slower, which is why we see lightning before we hear the thunder.\n"
    "The human body has more than two hundred bones and about six hundred muscles.\n"
    "The heart pumps blood through the body, carrying oxygen from the lungs to every cell.\n"
    "Eating fruit and vegetables gives the body the vitamins it needs to stay healthy.\n"
    "A small shop on the corner sells bread, cheese, coffee and the morning newspaper.\n"
    "The owner knows most of his customers by name and always asks about their families.\n"
    "On Sundays the shop is closed, and the whole street is quiet until the afternoon.\n"
    "Travelling by train is slower than flying, but you can see the country as it passes.\n"
    "Fields, forests, rivers and small towns go by while you read, sleep or look outside.\n"
    "At every station people get on and off, carrying bags, flowers and sometimes a dog.\n"
    "The conductor checks the tickets and tells the passengers when the next stop is.\n"
    "In winter the days are short, and in summer the sun stays up until late at night.\n"
    "Near the north pole there are weeks when the sun does not rise at all.\n"
    "People who live there have learned to enjoy the long dark winter and the bright summer.\n"
    "Mathematics is the language in which many of the laws of nature are written.\n"
    "A triangle has three sides, a square has four, and a circle has no corners at all.\n"
    "The area of a circle is pi times the square of its radius.\n"
    "Adding, subtracting, multiplying and dividing are the first things children learn.\n"
    "Later they learn about fractions, equations, functions and probability.\n"
    "An engineer uses mathematics and science to design bridges, engines and machines.\n"
    "Before a bridge is built, the engineers calculate how much weight it has to carry.\n"
    "They also think about wind, water, temperature and the ground under the bridge.\n"
    "A good design is simple, safe and cheap to build and to maintain.\n"
    "Music can make people happy, sad, calm or excited, sometimes all in one song.\n"
    "Some songs are very old and were sung by people long before anyone wrote them down.\n"
    "An orchestra has strings, woodwinds, brass and percussion, led by a conductor.\n"
    "Learning to play an instrument takes patience and practice, but it is worth it.\n"
    "The garden behind the house was full of roses, tulips and tall green grass.\n"
    "Every evening my father watered the plants and talked to them as if they were friends.\n"
    "He said that plants grow better when someone cares for them, and maybe he was right.\n"
    "The cat liked to sleep in the sun on the warm stones next to the kitchen door.\n"
    "Sometimes it caught a mouse and brought it into the house as a present for us.\n"
    "Writing clearly is a skill that anyone can learn with enough practice.\n"
    "Use short sentences, choose simple words and say what you mean.\n"
    "Read your text again the next day and remove everything that is not needed.\n"
    "A letter from an old friend is one of the nicest things to find in the mailbox.\n"
    "She wrote that she had moved to a new city, found a job and made new friends.\n"
    "She asked when we could meet again and promised to visit us next spring.\n"
    "The weather forecast says it will be sunny tomorrow, with a light wind from the west.\n"
    "In the mountains there may be showers in the afternoon and snow above two thousand "
    "metres.\n"
    "Farmers are waiting for rain, because the ground has been dry for several weeks.\n"
    "The price of bread, milk and vegetables has gone up again this year.\n"
    "Many families have to think carefully about what they buy and how much they spend.\n"
    "Saving a little money every month helps when something unexpected happens.\n"
    "The new hospital will open next month and will have room for three hundred patients.\n"
    "It was built in only two years, which is fast for a building of that size.\n"
    "The city also plans a new park, a school and a library in the same neighbourhood.\n"
    "What is the best way to learn a new language? Speak it every day, even if you make "
    "mistakes.\n"
    "Listen to the radio, watch films, read simple books and talk to people who speak it.\n"
    "After a few months you will notice that you understand much more than before.\n"
    "He opened the box slowly and found an old watch, a photograph and a key.\n"
    "Nobody knew which door the key opened, but everybody wanted to find out.\n"
    "They tried every door in the house, the shed and the garage, but none of them opened.\n"
    "Finally they found a small wooden chest in the attic, and the key fitted perfectly.\n"
    "Inside the chest were letters written by their great grandmother a hundred years ago.\n";

const char *synth_tokenizer_corpus(void)
{
    return corpus_text;
}

/* ---- BPE training ------------------------------------------------------- */

typedef struct word {
    int *sym;                   /* token ids */
    int n;
    int count;                  /* occurrences in the corpus */
} word;

typedef struct trainer {
    word *words;
    int n_words, cap_words;
    uint8_t *bytes;
    uint32_t *offset;
    int n_tok, cap_tok;
    size_t n_bytes, cap_bytes;
    /* pair counts, open addressing */
    uint64_t *pkey;
    int64_t *pcount;
    size_t pcap;
} trainer;

static int add_token(trainer *t, const uint8_t *b, size_t n)
{
    if (t->n_tok + 1 >= t->cap_tok) {
        int cap = t->cap_tok ? 2 * t->cap_tok : 1024;
        uint32_t *no = realloc(t->offset, ((size_t)cap + 1) * sizeof *no);
        if (!no)
            return -1;
        t->offset = no;
        t->cap_tok = cap;
    }
    if (t->n_bytes + n > t->cap_bytes) {
        size_t cap = t->cap_bytes ? 2 * t->cap_bytes : 8192;
        while (cap < t->n_bytes + n)
            cap *= 2;
        uint8_t *nb = realloc(t->bytes, cap);
        if (!nb)
            return -1;
        t->bytes = nb;
        t->cap_bytes = cap;
    }
    if (t->n_tok == 0)
        t->offset[0] = 0;
    memcpy(t->bytes + t->n_bytes, b, n);
    t->n_bytes += n;
    t->offset[++t->n_tok] = (uint32_t)t->n_bytes;
    return 0;
}

static int find_token(const trainer *t, const uint8_t *b, size_t n)
{
    for (int i = 0; i < t->n_tok; i++)
        if (t->offset[i + 1] - t->offset[i] == n && memcmp(t->bytes + t->offset[i], b, n) == 0)
            return i;
    return -1;
}

/* Adds one pre-tokenized piece, merging duplicates into a count. */
static int add_word(trainer *t, const char *s, size_t n)
{
    for (int i = 0; i < t->n_words; i++) {
        word *w = &t->words[i];
        if ((size_t)w->n == n) {
            size_t k = 0;
            while (k < n && w->sym[k] == (uint8_t)s[k])
                k++;
            if (k == n) {
                w->count++;
                return 0;
            }
        }
    }
    if (t->n_words == t->cap_words) {
        int cap = t->cap_words ? 2 * t->cap_words : 256;
        word *nw = realloc(t->words, (size_t)cap * sizeof *nw);
        if (!nw)
            return -1;
        t->words = nw;
        t->cap_words = cap;
    }
    word *w = &t->words[t->n_words];
    w->sym = malloc(n * sizeof *w->sym);
    if (!w->sym)
        return -1;
    for (size_t k = 0; k < n; k++)
        w->sym[k] = (uint8_t)s[k];
    w->n = (int)n;
    w->count = 1;
    t->n_words++;
    return 0;
}

/* GPT-style split: a piece is an optional leading space plus the following run
 * of non-space characters; a newline is a piece of its own. */
static int split_corpus(trainer *t, const char *text)
{
    const char *p = text;
    while (*p) {
        const char *start = p;
        if (*p == '\n') {
            p++;
        } else {
            if (*p == ' ')
                p++;
            while (*p && *p != ' ' && *p != '\n')
                p++;
        }
        if (add_word(t, start, (size_t)(p - start)))
            return -1;
    }
    return 0;
}

static uint64_t pair_hash(uint64_t k)
{
    k ^= k >> 33;
    k *= 0xff51afd7ed558ccdull;
    k ^= k >> 33;
    return k;
}

/* Counts adjacent pairs weighted by word counts; returns the best pair (most
 * frequent, ties to the smallest ids) in *best and its count. */
static int64_t best_pair(trainer *t, uint64_t *best)
{
    memset(t->pkey, 0xff, t->pcap * sizeof *t->pkey);
    size_t mask = t->pcap - 1;
    int64_t best_n = 0;
    *best = UINT64_MAX;
    for (int i = 0; i < t->n_words; i++) {
        const word *w = &t->words[i];
        for (int k = 0; k + 1 < w->n; k++) {
            uint64_t key = ((uint64_t)(uint32_t)w->sym[k] << 32) | (uint32_t)w->sym[k + 1];
            size_t h = pair_hash(key) & mask;
            while (t->pkey[h] != UINT64_MAX && t->pkey[h] != key)
                h = (h + 1) & mask;
            if (t->pkey[h] == UINT64_MAX) {
                t->pkey[h] = key;
                t->pcount[h] = 0;
            }
            t->pcount[h] += w->count;
            int64_t c = t->pcount[h];
            if (c > best_n || (c == best_n && key < *best)) {
                best_n = c;
                *best = key;
            }
        }
    }
    return best_n;
}

static void apply_merge(trainer *t, int a, int b, int id)
{
    for (int i = 0; i < t->n_words; i++) {
        word *w = &t->words[i];
        int o = 0;
        for (int k = 0; k < w->n; k++) {
            if (k + 1 < w->n && w->sym[k] == a && w->sym[k + 1] == b) {
                w->sym[o++] = id;
                k++;
            } else {
                w->sym[o++] = w->sym[k];
            }
        }
        w->n = o;
    }
}

static void trainer_free(trainer *t)
{
    for (int i = 0; i < t->n_words; i++)
        free(t->words[i].sym);
    free(t->words);
    free(t->pkey);
    free(t->pcount);
    free(t->bytes);
    free(t->offset);
}

/* Trains up to max_tokens regular tokens into t->bytes/offset. */
static int train(trainer *t, int max_tokens)
{
    for (int b = 0; b < 256; b++) {
        uint8_t c = (uint8_t)b;
        if (add_token(t, &c, 1))
            return -1;
    }
    if (split_corpus(t, corpus_text))
        return -1;
    size_t total = 0;
    for (int i = 0; i < t->n_words; i++)
        total += (size_t)t->words[i].n;
    t->pcap = 1024;
    while (t->pcap < 2 * total)
        t->pcap *= 2;
    t->pkey = malloc(t->pcap * sizeof *t->pkey);
    t->pcount = malloc(t->pcap * sizeof *t->pcount);
    if (!t->pkey || !t->pcount)
        return -1;
    uint8_t tmp[4096];
    while (t->n_tok < max_tokens) {
        uint64_t key;
        if (best_pair(t, &key) < 2)
            break;
        int a = (int)(key >> 32), b = (int)(uint32_t)key;
        size_t la = t->offset[a + 1] - t->offset[a], lb = t->offset[b + 1] - t->offset[b];
        if (la + lb > sizeof tmp)
            break;
        memcpy(tmp, t->bytes + t->offset[a], la);
        memcpy(tmp + la, t->bytes + t->offset[b], lb);
        /* The same bytes can arise from two different pairs; reuse the token
         * then (ranks must be unique byte strings). Each merge shortens the
         * corpus, so this terminates. */
        int id = find_token(t, tmp, la + lb);
        if (id < 0) {
            id = t->n_tok;
            if (add_token(t, tmp, la + lb))
                return -1;
        }
        apply_merge(t, a, b, id);
    }
    return 0;
}

/* ---- special tokens ----------------------------------------------------- */

static int id_taken(const synth_tokenizer *t, int id)
{
    for (int i = 0; i < t->n_named; i++)
        if (t->named[i].id == id)
            return 1;
    return 0;
}

/* Places content at want if free and inside [first_special, vocab), else at
 * the next free id from first_special up. */
static int place_special(synth_tokenizer *t, const char *content, int want, errbuf *e)
{
    int id = -1;
    if (want >= t->first_special && want < t->vocab_size && !id_taken(t, want))
        id = want;
    for (int i = t->first_special; id < 0 && i < t->vocab_size; i++)
        if (!id_taken(t, i))
            id = i;
    if (id < 0)
        return err_set(e, "synthetic tokenizer: no free id for %s above the regular vocabulary "
                       "(ids %d..%d are all taken)", content, t->first_special, t->vocab_size - 1);
    t->named[t->n_named].id = id;
    t->named[t->n_named].content = content;
    t->n_named++;
    return 0;
}

int synth_tokenizer_build(synth_tokenizer *t, int vocab_size, int bos_id, int eos_id, errbuf *e)
{
    memset(t, 0, sizeof *t);
    t->vocab_size = vocab_size;
    t->bos_id = bos_id;
    t->eos_id = eos_id;
    if (vocab_size < 256 + 16)
        return err_set(e, "synthetic tokenizer: vocab_size %d is too small (at least 272: 256 "
                       "byte tokens and 16 added tokens)", vocab_size);
    for (int k = 0; k < 2; k++) {
        int id = k ? eos_id : bos_id;
        if (id >= 0 && (id < 256 || id >= vocab_size))
            return err_set(e, "synthetic tokenizer: %s %d must lie in 256..%d (above the 256 byte "
                           "tokens, inside vocab_size)", k ? "eos_token_id" : "bos_token_id", id,
                           vocab_size - 1);
    }
    if (bos_id >= 0 && bos_id == eos_id)
        return err_set(e, "synthetic tokenizer: bos_token_id and eos_token_id are both %d", bos_id);
    int lo = bos_id >= 0 && eos_id >= 0 ? (bos_id < eos_id ? bos_id : eos_id)
                                         : (bos_id >= 0 ? bos_id : eos_id);
    if (lo < 0)
        lo = vocab_size - 256 > 256 ? vocab_size - 256 : 256;
    t->first_special = lo;
    if (vocab_size - lo < 16)
        return err_set(e, "synthetic tokenizer: only %d ids above %d for the 16 added tokens",
                       vocab_size - lo, lo);
    /* bos/eos first (their ids are fixed by config.json), then Kimi's offsets */
    if (place_special(t, "[BOS]", bos_id >= 0 ? bos_id : lo, e) ||
        place_special(t, "[EOS]", eos_id >= 0 ? eos_id : lo + 1, e) ||
        place_special(t, "<|im_end|>", lo + 2, e) || place_special(t, "<|im_user|>", lo + 3, e) ||
        place_special(t, "<|im_assistant|>", lo + 4, e) ||
        place_special(t, "<|im_system|>", lo + 10, e) ||
        place_special(t, "<|tool_calls_section_begin|>", lo + 11, e) ||
        place_special(t, "<|tool_calls_section_end|>", lo + 12, e) ||
        place_special(t, "<|tool_call_begin|>", lo + 13, e) ||
        place_special(t, "<|tool_call_argument_begin|>", lo + 14, e) ||
        place_special(t, "<|tool_call_end|>", lo + 15, e) ||
        place_special(t, "<|im_middle|>", lo + 17, e) ||
        place_special(t, "[UNK]", vocab_size - 2, e) || place_special(t, "[PAD]", vocab_size - 1, e) ||
        place_special(t, "<think>", lo + 22, e) || place_special(t, "</think>", lo + 23, e))
        return -1;
    t->bos_id = t->named[0].id;
    t->eos_id = t->named[1].id;
    trainer tr;
    memset(&tr, 0, sizeof tr);
    if (train(&tr, lo)) {
        trainer_free(&tr);
        return err_set(e, "synthetic tokenizer: out of memory");
    }
    t->n_regular = tr.n_tok;
    t->bytes = tr.bytes;
    t->offset = tr.offset;
    tr.bytes = NULL;
    tr.offset = NULL;
    trainer_free(&tr);
    return 0;
}

void synth_tokenizer_free(synth_tokenizer *t)
{
    free(t->bytes);
    free(t->offset);
    memset(t, 0, sizeof *t);
}

/* ---- files -------------------------------------------------------------- */

static size_t base64_encode(const uint8_t *in, size_t n, char *out)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    size_t o = 0;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16;
        if (i + 1 < n)
            v |= (uint32_t)in[i + 1] << 8;
        if (i + 2 < n)
            v |= in[i + 2];
        out[o++] = tab[(v >> 18) & 63];
        out[o++] = tab[(v >> 12) & 63];
        out[o++] = i + 1 < n ? tab[(v >> 6) & 63] : '=';
        out[o++] = i + 2 < n ? tab[v & 63] : '=';
    }
    return o;
}

static int save_ranks(const synth_tokenizer *t, const char *dir, errbuf *e)
{
    size_t cap = 64;
    for (int i = 0; i < t->n_regular; i++)
        cap += (t->offset[i + 1] - t->offset[i] + 2) / 3 * 4 + 16;
    char *buf = malloc(cap), path[4096];
    if (!buf)
        return err_set(e, "out of memory");
    size_t n = 0;
    for (int i = 0; i < t->n_regular; i++) {
        n += base64_encode(t->bytes + t->offset[i], t->offset[i + 1] - t->offset[i], buf + n);
        n += (size_t)snprintf(buf + n, cap - n, " %d\n", i);
    }
    snprintf(path, sizeof path, "%s/tiktoken.model", dir);
    int rc = file_replace_atomic(path, buf, n, e);
    free(buf);
    return rc;
}

/* Kimi's reasoning tags are added tokens but not special ones to Hugging
 * Face: a decode that skips special tokens keeps them */
static int hf_special(const char *content)
{
    return strcmp(content, "<think>") && strcmp(content, "</think>");
}

static cJSON *added_token(const char *content)
{
    cJSON *o = cJSON_CreateObject();
    if (!o)
        return NULL;
    cJSON_AddStringToObject(o, "content", content);
    cJSON_AddBoolToObject(o, "lstrip", 0);
    cJSON_AddBoolToObject(o, "normalized", 0);
    cJSON_AddBoolToObject(o, "rstrip", 0);
    cJSON_AddBoolToObject(o, "single_word", 0);
    cJSON_AddBoolToObject(o, "special", hf_special(content));
    return o;
}

static int save_config(const synth_tokenizer *t, const char *dir, errbuf *e)
{
    /* added_tokens_decoder in id order, as Hugging Face writes it */
    int order[SYNTH_TOK_MAX_NAMED];
    for (int i = 0; i < t->n_named; i++)
        order[i] = i;
    for (int i = 1; i < t->n_named; i++)
        for (int k = i; k > 0 && t->named[order[k]].id < t->named[order[k - 1]].id; k--) {
            int x = order[k];
            order[k] = order[k - 1];
            order[k - 1] = x;
        }
    cJSON *root = cJSON_CreateObject();
    cJSON *atd = cJSON_AddObjectToObject(root, "added_tokens_decoder");
    cJSON *extra = cJSON_CreateArray();
    for (int i = 0; i < t->n_named; i++) {
        const synth_special *s = &t->named[order[i]];
        char key[16];
        snprintf(key, sizeof key, "%d", s->id);
        cJSON_AddItemToObject(atd, key, added_token(s->content));
        if (s->content[0] == '<' && hf_special(s->content))
            cJSON_AddItemToArray(extra, cJSON_CreateString(s->content));
    }
    cJSON_AddItemToObject(root, "additional_special_tokens", extra);
    cJSON_AddStringToObject(root, "bos_token", "[BOS]");
    cJSON_AddBoolToObject(root, "clean_up_tokenization_spaces", 0);
    cJSON_AddStringToObject(root, "eos_token", "[EOS]");
    cJSON_AddNumberToObject(root, "model_max_length", 1048576);
    cJSON_AddStringToObject(root, "pad_token", "[PAD]");
    cJSON_AddStringToObject(root, "tokenizer_class", "TikTokenTokenizer");
    cJSON_AddStringToObject(root, "unk_token", "[UNK]");
    char *text = json_print_hf(root);
    cJSON_Delete(root);
    if (!text)
        return err_set(e, "out of memory");
    char path[4096];
    snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
    int rc = file_replace_atomic(path, text, strlen(text), e);
    free(text);
    return rc;
}

int synth_tokenizer_save(const synth_tokenizer *t, const char *dir, errbuf *e)
{
    return save_ranks(t, dir, e) || save_config(t, dir, e) ? -1 : 0;
}

int synth_tokenizer_write(const char *dir, int vocab_size, int bos_id, int eos_id, errbuf *e)
{
    synth_tokenizer t;
    if (synth_tokenizer_build(&t, vocab_size, bos_id, eos_id, e))
        return -1;
    int rc = synth_tokenizer_save(&t, dir, e);
    synth_tokenizer_free(&t);
    return rc;
}
