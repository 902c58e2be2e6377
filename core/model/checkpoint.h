/* checkpoint: a Hugging Face checkpoint directory as one set of tensors.
 *
 * Shards are found through model.safetensors.index.json ("weight_map": tensor ->
 * file), or a single model.safetensors; file names are never guessed. Every shard
 * is opened and validated, and the index must agree with the shards' headers. */
#ifndef MOETIER_CHECKPOINT_H
#define MOETIER_CHECKPOINT_H

#include "safetensors.h"

typedef struct checkpoint {
    char *dir;
    st_file *files;
    int n_files;
    const st_tensor **by_name;  /* all tensors of all files, sorted by name */
    int n_tensors;
    unsigned char *found;       /* [n_tensors] by_name's that checkpoint_find returned */
} checkpoint;

int checkpoint_open(checkpoint *c, const char *dir, errbuf *e);
void checkpoint_close(checkpoint *c);
/* NULL when absent; a tensor found is marked in c->found. */
const st_tensor *checkpoint_find(const checkpoint *c, const char *name);
/* Path of the shard holding t, for messages. */
const char *checkpoint_path_of(const checkpoint *c, const st_tensor *t);

#endif
