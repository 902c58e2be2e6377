/* draft_tuner: see draft_tuner.h. */
#include "draft_tuner.h"

#include <stdlib.h>
#include <string.h>

/* the moving average's weight of a new step time */
#define COST_WEIGHT 0.25

const char *const draft_match_class_names[DRAFT_MATCH_CLASSES] = {"2", "3", "4-7", "8+"};
/* about what a first guess of each class had on this project's prose and code
 * (bench_draft_lookup, docs/benchmarks.md) */
const double draft_match_class_prior[DRAFT_MATCH_CLASSES] = {0.35, 0.45, 0.55, 0.75};

int draft_match_class(int match)
{
    return match <= 2 ? 0 : match == 3 ? 1 : match < DRAFT_LOOKUP_MATCH_MAX ? 2 : 3;
}

void draft_accept_init(draft_accept *a)
{
    memset(a, 0, sizeof *a);
}

void draft_accept_restart(draft_accept *a)
{
    a->n_pending = 0;
}

void draft_accept_start_from(draft_accept *a, const draft_accept *earlier)
{
    draft_accept_init(a);
    for (int c = 0; c < DRAFT_MATCH_CLASSES; c++)
        for (int j = 0; j < DRAFT_GUESS_MAX; j++) {
            a->trials[c][j] = 0.5 * earlier->trials[c][j];
            a->kept[c][j] = 0.5 * earlier->kept[c][j];
        }
}

void draft_accept_lookup(draft_accept *a, const int *guess, int n, int match)
{
    if (n <= 0)
        return;
    if (n > DRAFT_GUESS_MAX)
        n = DRAFT_GUESS_MAX;
    int cap = (int)(sizeof a->pending / sizeof a->pending[0]);
    if (a->n_pending == cap) {  /* (lookups without tokens between: the oldest goes) */
        memmove(a->pending, a->pending + 1, (size_t)(cap - 1) * sizeof a->pending[0]);
        a->n_pending--;
    }
    memcpy(a->pending[a->n_pending].ids, guess, (size_t)n * sizeof *guess);
    a->pending[a->n_pending].n = n;
    a->pending[a->n_pending].at = 0;
    a->pending[a->n_pending].cls = draft_match_class(match);
    a->n_pending++;
}

void draft_accept_token(draft_accept *a, int id)
{
    int k = 0;
    for (int i = 0; i < a->n_pending; i++) {
        int j = a->pending[i].at, c = a->pending[i].cls, hit = a->pending[i].ids[j] == id;
        a->trials[c][j] = a->trials[c][j] * DRAFT_ACCEPT_DECAY + 1.0;
        a->kept[c][j] = a->kept[c][j] * DRAFT_ACCEPT_DECAY + hit;
        if (hit && ++a->pending[i].at < a->pending[i].n)
            a->pending[k++] = a->pending[i];
    }
    a->n_pending = k;
}

double draft_accept_chance(const draft_accept *a, int cls, int j)
{
    /* before anything is known, the class's usual chance, with the weight of one lookup */
    return (a->kept[cls][j] + draft_match_class_prior[cls]) / (a->trials[cls][j] + 1.0);
}

void draft_accept_chances(const draft_accept *a, int match, double *chance)
{
    for (int j = 0; j < DRAFT_GUESS_MAX; j++)
        chance[j] = draft_accept_chance(a, draft_match_class(match), j);
}

void draft_cost_init(draft_cost *c)
{
    memset(c, 0, sizeof *c);
    const char *tune = getenv("MOETIER_DRAFT_TUNE");
    c->check_all = tune && !strcmp(tune, "0");
}

static int fresh(const draft_cost *c, int rows)
{
    return c->last[rows] && c->steps - c->last[rows] < DRAFT_COST_FRESH;
}

void draft_cost_add(draft_cost *c, int rows, double seconds)
{
    c->steps++;
    if (rows < 1 || rows > DRAFT_COST_ROWS)
        return;
    if (!fresh(c, rows)) {
        c->seconds[rows] = seconds;
    } else {
        /* a step held up once (a page fault, a read from the store) moves the
         * average by a quarter of the average at most: a row count timed
         * rarely would otherwise look dear until its time went stale */
        double cap = 2.0 * c->seconds[rows];
        c->seconds[rows] = (1.0 - COST_WEIGHT) * c->seconds[rows] +
                           COST_WEIGHT * (seconds < cap ? seconds : cap);
    }
    c->last[rows] = c->steps;
}

/* the fresh row count nearest to `from` going by step (+1 or -1), 0 if none */
static int next_fresh(const draft_cost *c, int from, int step)
{
    for (int r = from; r >= 1 && r <= DRAFT_COST_ROWS; r += step)
        if (fresh(c, r))
            return r;
    return 0;
}

double draft_cost_time(const draft_cost *c, int rows)
{
    int r = rows < 1 ? 1 : rows;
    if (c->check_all)
        return 1.0;
    if (r <= DRAFT_COST_ROWS && fresh(c, r))
        return c->seconds[r];
    int below = next_fresh(c, r > DRAFT_COST_ROWS ? DRAFT_COST_ROWS : r - 1, -1);
    int above = r < DRAFT_COST_ROWS ? next_fresh(c, r + 1, 1) : 0;
    int a, b;   /* the two fresh counts the line goes through */
    if (below && above) {
        a = below;
        b = above;
    } else if (below) {
        a = next_fresh(c, below - 1, -1);
        b = below;
    } else if (above) {
        a = above;
        b = next_fresh(c, above + 1, 1);
    } else {
        return 1.0;
    }
    if (!a || !b) {
        /* one fresh count: a larger step taken to cost the same (it is then
         * tried), a smaller one its share of the rows (likewise) */
        int only = a ? a : b;
        return r > only ? c->seconds[only] : c->seconds[only] * r / only;
    }
    double slope = (c->seconds[b] - c->seconds[a]) / (double)(b - a);
    if (slope < 0 && !(below && above))
        slope = 0;      /* (a noisy pair does not make larger steps cheaper) */
    int from = below && !above ? b : a;    /* the fresh count nearest r */
    double t = c->seconds[from] + slope * (double)(r - from);
    double least = 1e-3 * (c->seconds[a] < c->seconds[b] ? c->seconds[a] : c->seconds[b]);
    return t > least ? t : least;
}

int draft_choose(const draft_cost *c, const double *chance, const int *avail, int n, int room,
                 int *g)
{
    /* Each further guess of a sequence is kept with the chance that it and all
     * before it are, which only falls along the sequence: the best k guesses
     * in all are then the k likeliest, taken one at a time, and the best step
     * is the best of those for k = 0 .. room. */
    double gain[n];
    int order[room > 0 ? room : 1];
    for (int i = 0; i < n; i++) {
        g[i] = 0;
        gain[i] = avail[i] > 0 ? chance[(size_t)i * DRAFT_GUESS_MAX] : 0;
    }
    double expected = n, best = expected / draft_cost_time(c, n);
    int best_k = 0;
    for (int k = 0; k < room; k++) {
        int pick = -1;
        for (int i = 0; i < n; i++)
            if (g[i] < avail[i] && (pick < 0 || gain[i] > gain[pick]))
                pick = i;
        if (pick < 0)
            break;
        order[k] = pick;
        expected += gain[pick];
        g[pick]++;
        gain[pick] *= g[pick] < avail[pick] ? chance[(size_t)pick * DRAFT_GUESS_MAX + (size_t)g[pick]] : 0;
        double v = expected / draft_cost_time(c, n + k + 1);
        if (v > best) {
            best = v;
            best_k = k + 1;
        }
    }
    for (int i = 0; i < n; i++)
        g[i] = 0;
    for (int j = 0; j < best_k; j++)
        g[order[j]]++;
    return best_k;
}

void draft_tuner_init(draft_tuner *t)
{
    draft_accept_init(&t->accept);
    draft_cost_init(&t->cost);
}

int draft_tuner_guesses(draft_tuner *t, const engine *en, int last, int want, int left, int *out)
{
    int match, avail = draft_lookup_step(en, last, want, left, out, &match);
    draft_accept_lookup(&t->accept, out, avail, match);
    if (!avail)
        return 0;
    double chance[DRAFT_GUESS_MAX];
    draft_accept_chances(&t->accept, match, chance);
    int g;
    draft_choose(&t->cost, chance, &avail, 1, avail, &g);
    return g;
}

void draft_tuner_print(const draft_tuner *t, FILE *f)
{
    fprintf(f, "draft lookup: chance a guess is kept after those before it, by tokens matched:");
    for (int c = 0; c < DRAFT_MATCH_CLASSES; c++) {
        fprintf(f, "%s %s:", c ? ";" : "", draft_match_class_names[c]);
        for (int j = 0; j < DRAFT_GUESS_MAX; j++)
            fprintf(f, " %.0f", 100.0 * draft_accept_chance(&t->accept, c, j));
        fprintf(f, " %%");
    }
    if (t->cost.check_all) {
        fprintf(f, "; every guess checked (MOETIER_DRAFT_TUNE=0)\n");
        return;
    }
    int timed = 0;
    for (int r = 2; r <= ENGINE_DRAFT_MAX_T; r++)
        timed += fresh(&t->cost, r);
    if (!timed) {
        fprintf(f, "; no recent step of several rows timed\n");
        return;
    }
    double one = draft_cost_time(&t->cost, 1);
    fprintf(f, "; step time of 2..%d rows against 1:", ENGINE_DRAFT_MAX_T);
    for (int r = 2; r <= ENGINE_DRAFT_MAX_T; r++)
        fprintf(f, " %.2f%s", draft_cost_time(&t->cost, r) / one, fresh(&t->cost, r) ? "" : "*");
    fprintf(f, " (* estimated)\n");
}
