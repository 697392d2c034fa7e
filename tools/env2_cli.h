/* Sub-commands of the env2 program; each returns the process exit status
 * (0 success, 1 runtime error, 2 usage error).  argv[0] is the sub-command. */
#ifndef ENV2_CLI_H
#define ENV2_CLI_H
int cmd_info(int argc, char **argv);
int cmd_init(int argc, char **argv);
int cmd_forward(int argc, char **argv);
int cmd_grad(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_train(int argc, char **argv);
int cmd_eval(int argc, char **argv);
int cmd_predict(int argc, char **argv);
int cmd_schedule(int argc, char **argv);

#include <string.h>
/* --keep-activations auto|on|off -> env2_trainer_options.keep_activations
 * (-1, 1, 0); -2 for anything else */
static inline int cli_keep_activations(const char *s)
{
    return !strcmp(s, "auto") ? -1 : !strcmp(s, "on") ? 1 : !strcmp(s, "off") ? 0 : -2;
}
#endif
