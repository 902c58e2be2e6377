/* Runs the fuzz targets over their seed corpus plus a bounded number of
 * deterministic mutations, then over the inputs coverage-guided fuzzing kept
 * (tests/fuzz/grown/, as they are): the sanitizer build turns any memory error
 * into a failure here. Coverage-guided fuzzing uses the same targets with
 * libFuzzer. */
#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

/* Runs one replay command line; it must exit 0 having run its inputs. */
static void replay(const char *cmd, const char *what)
{
    char *out, *err;
    int rc = test_run_capture(cmd, &out, &err);
    cr_expect_eq(rc, 0, "%s failed (%d): %s", what, rc, err);
    cr_expect(strstr(out, "inputs run") != NULL, "%s: %s", what, out);
    free(out);
    free(err);
}

static void run_target(const char *target, const char *corpus, int mutations)
{
    const char *d = getenv("MOETIER_FUZZ_DIR");
    if (!d || !*d)
        cr_skip_test("MOETIER_FUZZ_DIR not set (run through make test)");
    char cmd[4096], what[256];
    snprintf(cmd, sizeof cmd, "%s/%s --mutate %d 12345 tests/fuzz/corpus/%s/*", d, target,
             mutations, corpus);
    replay(cmd, target);
    snprintf(cmd, sizeof cmd, "%s/%s tests/fuzz/grown/%s/*", d, target, corpus);
    snprintf(what, sizeof what, "%s on tests/fuzz/grown/%s", target, corpus);
    replay(cmd, what);
}

Test(fuzz, safetensors_parser) { run_target("fuzz_safetensors", "safetensors", 20000); }
Test(fuzz, config_parser) { run_target("fuzz_config", "config", 5000); }
Test(fuzz, tokenizer_loader) { run_target("fuzz_tokenizer_load", "tokenizer_load", 3000); }
Test(fuzz, tokenizer_json_reader) { run_target("fuzz_tokenizer_json", "tokenizer_json", 2000); }
Test(fuzz, tokenize_roundtrip) { run_target("fuzz_tokenize", "tokenize", 5000); }
Test(fuzz, chat_render_and_tool_calls) { run_target("fuzz_chat", "chat", 3000); }
Test(fuzz, chat_template_engine) { run_target("fuzz_jinja", "jinja", 5000); }
Test(fuzz, store_index, .timeout = 120) { run_target("fuzz_store_index", "store_index", 1500); }
Test(fuzz, trace_reader) { run_target("fuzz_trace", "trace", 3000); }
Test(fuzz, server_requests) { run_target("fuzz_oai_request", "oai_request", 3000); }
Test(fuzz, string_patterns) { run_target("fuzz_json_regex", "json_regex", 20000); }
Test(fuzz, prompt_file) { run_target("fuzz_prompt_file", "prompt_file", 3000); }
Test(fuzz, grammars) { run_target("fuzz_gbnf", "gbnf", 3000); }
