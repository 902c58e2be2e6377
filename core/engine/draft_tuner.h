/* draft_tuner: how many of a step's guesses (draft_lookup) to check. A
 * checked guess costs a row of the step (its experts, its attention); it pays
 * only as far as it is kept. The tuner learns both sides as it goes and picks
 * the guesses that give the most tokens per second:
 *
 *  - how often the j-th guess of a lookup is kept, given the ones before it
 *    were, by how long a run of last tokens the lookup matched (a longer one
 *    is kept far more often), from every lookup, checked or not: a lookup's
 *    guesses are judged by the tokens the answer then takes, which are the
 *    same whether they were checked or not (a guess is kept only where the
 *    sampler, drawing one token at a time, picks it);
 *  - what a step of r rows takes, timed as steps run (a CPU's expert kernels
 *    pay for every row; a GPU's dense products hardly do).
 *
 * Which steps check guesses then depends on timing, but the answer does not:
 * each row of a step has the bits of its token decoded alone. */
#ifndef MOETIER_DRAFT_TUNER_H
#define MOETIER_DRAFT_TUNER_H

#include "core/engine/draft_lookup.h"
#include "core/engine/engine.h"

#define DRAFT_GUESS_MAX (ENGINE_DRAFT_MAX_T - 1)

/* An outcome's weight halves after about 14 more of its class and position: the text's
 * repeats change as it goes (a quoted block ends, a list begins). */
#define DRAFT_ACCEPT_DECAY 0.95

/* Lookups are told apart by the run of last tokens they matched: 2, 3, 4-7,
 * 8 or more (DRAFT_LOOKUP_MATCH_MAX). */
#define DRAFT_MATCH_CLASSES 4
int draft_match_class(int match);
/* "2", "3", "4-7", "8+" */
extern const char *const draft_match_class_names[DRAFT_MATCH_CLASSES];
/* a guess's chance before a sequence's own lookups say otherwise */
extern const double draft_match_class_prior[DRAFT_MATCH_CLASSES];

/* How a sequence's guesses fare: per match class and position j (0-based),
 * the decayed count of lookups whose guesses before j were all kept, and of
 * those whose j-th was kept too. Lookups whose guesses still wait for their
 * tokens are pending. */
typedef struct draft_accept {
    double trials[DRAFT_MATCH_CLASSES][DRAFT_GUESS_MAX], kept[DRAFT_MATCH_CLASSES][DRAFT_GUESS_MAX];
    struct {
        int ids[DRAFT_GUESS_MAX];
        int n, at;      /* guesses, and how many have been kept so far */
        int cls;        /* its match class */
    } pending[DRAFT_GUESS_MAX + 1];
    int n_pending;
} draft_accept;

void draft_accept_init(draft_accept *a);
/* The answer starts again (a new choice from the prompt): pending lookups go,
 * what was learned stays. */
void draft_accept_restart(draft_accept *a);
/* A new answer's start: what an earlier one learned, at half its weight (the
 * answer's own outcomes soon outweigh it), nothing pending. */
void draft_accept_start_from(draft_accept *a, const draft_accept *earlier);
/* A lookup's guesses at the tokens after the answer's last one, and the run it
 * matched (call after draft_accept_token of that token). */
void draft_accept_lookup(draft_accept *a, const int *guess, int n, int match);
/* The answer's next token, every one in order: judges the pending lookups. */
void draft_accept_token(draft_accept *a, int id);
/* the estimated chance that guess j of a lookup of match class cls is kept
 * when the guesses before it are */
double draft_accept_chance(const draft_accept *a, int cls, int j);
/* those chances for every position of a lookup that matched `match` tokens,
 * into chance[DRAFT_GUESS_MAX] */
void draft_accept_chances(const draft_accept *a, int match, double *chance);

/* Step seconds by rows, a moving average per row count (a time above twice
 * the average counts as twice it); a count not timed in the last
 * DRAFT_COST_FRESH steps is estimated from those that were. */
#define DRAFT_COST_ROWS 64
#define DRAFT_COST_FRESH 32
typedef struct draft_cost {
    double seconds[DRAFT_COST_ROWS + 1];
    unsigned long long last[DRAFT_COST_ROWS + 1];   /* step count when last timed; 0: never */
    unsigned long long steps;
    /* every step taken to cost the same, so every guess found is checked:
     * which rows a step has then does not depend on timing (tests; set by
     * MOETIER_DRAFT_TUNE=0) */
    int check_all;
} draft_cost;

/* nothing timed yet; check_all from MOETIER_DRAFT_TUNE */
void draft_cost_init(draft_cost *c);

/* a step of rows rows took seconds (steps of more than DRAFT_COST_ROWS are not kept) */
void draft_cost_add(draft_cost *c, int rows, double seconds);
/* Estimated seconds of a step of rows rows: the average where fresh, else
 * linear through the fresh counts around it (beyond the last one, its slope
 * continued). With one fresh count, a larger step is taken to cost the same
 * and a smaller one its share of the rows, so the next step tries another
 * count and a line can be drawn; with none, every count costs 1. */
double draft_cost_time(const draft_cost *c, int rows);

/* For n sequences stepped together, sequence i with avail[i] guesses whose
 * chances (draft_accept_chances) are chance[i]: how many of each to check
 * (g[i], its first ones), at most room in all, to maximise the expected tokens
 * per second of the step. Returns the guesses checked in all. */
int draft_choose(const draft_cost *c, const double *chance, const int *avail, int n, int room,
                 int *g);

/* One sequence's tuner (run and chat); draft_tuner_init as draft_cost_init. */
typedef struct draft_tuner {
    draft_accept accept;
    draft_cost cost;
} draft_tuner;

void draft_tuner_init(draft_tuner *t);
/* The guesses to check in the step of last on the engine's cache (into out,
 * the first ones of the lookup, draft_lookup_step's want and left): the
 * lookup is noted, and those the tuner expects to pay are returned. */
int draft_tuner_guesses(draft_tuner *t, const struct engine *en, int last, int want, int left,
                        int *out);
/* "draft lookup: ..." details on f: the chance of each guess by match class,
 * and each row count's step time against one row's */
void draft_tuner_print(const draft_tuner *t, FILE *f);

#endif
