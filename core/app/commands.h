/* commands: the entry point of each `moetier <command>`; argv[0] is the command. */
#ifndef MOETIER_COMMANDS_H
#define MOETIER_COMMANDS_H

int cmd_logits(int argc, char **argv);
int cmd_run(int argc, char **argv);
int cmd_inspect(int argc, char **argv);
int cmd_synth(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_chat(int argc, char **argv);
int cmd_convert(int argc, char **argv);
int cmd_bench(int argc, char **argv);
/* `bench model`: argv[1] is "model" */
int cmd_bench_model(int argc, char **argv);
int cmd_trace(int argc, char **argv);
int cmd_serve(int argc, char **argv);
int cmd_tune(int argc, char **argv);
int cmd_perplexity(int argc, char **argv);

#endif
