/* cache_policy: policies by name (see cache_policy.h). */
#include "cache_policy.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/base/decimal.h"

int cache_policy_make(cache_policy *p, const char *name, int n_slots, int n_keys, int layers)
{
    if (!strcmp(name, "lru"))
        return cache_policy_lru(p, n_slots);
    if (!strcmp(name, "lru-plain")) {   /* LRU without scan resistance */
        if (cache_policy_lru(p, n_slots))
            return -1;
        p->name = "lru-plain";
        p->peek = p->newest = NULL;
        return 0;
    }
    if (!strncmp(name, "lfu", 3)) {
        double h = CACHE_LFU_HALF_LIFE;
        if (name[3] == ':') {   /* lfu:H, a half-life of H accesses */
            char *end;
            h = decimal_parse(name + 4, &end);
            if (end == name + 4 || *end || !(h > 0) || !isfinite(h))
                return -1;
        } else if (name[3]) {
            return -1;
        }
        return cache_policy_lfu(p, n_slots, n_keys, h * (layers > 1 ? layers : 1));
    }
    return -1;
}

int cache_policy_name_ok(const char *name)
{
    cache_policy probe;
    if (cache_policy_make(&probe, name, 1, 1, 1))
        return 0;
    probe.destroy(probe.st);
    return 1;
}
