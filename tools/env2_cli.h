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
#endif
