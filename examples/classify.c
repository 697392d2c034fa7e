/* Classify one image with a model saved by torchvision (or by env2).
 *   cc classify.c $(pkg-config --cflags --libs efficientnetv2) -o classify
 *   ./classify weights.safetensors            (random input, prints the top class) */
#include <stdio.h>
#include <stdlib.h>

#include <efficientnetv2.h>

int main(int argc, char **argv)
{
    env2_model *m;
    if (env2_model_create(&m, "efficientnetv2-s", NULL) != ENV2_OK) return fprintf(stderr, "%s\n", env2_last_error()), 1;
    if (argc > 1 && env2_model_load(m, argv[1], ENV2_LOAD_DEFAULT) != ENV2_OK)
        return fprintf(stderr, "%s\n", env2_last_error()), env2_model_destroy(m), 1;
    int size = 224;
    float *image = malloc(sizeof(float) * 3 * size * size), logits[1000];
    for (int i = 0; i < 3 * size * size; i++) image[i] = (float)((i * 7919) % 255) / 255.0f - 0.5f;
    if (env2_forward(m, image, 1, size, size, ENV2_LAYOUT_NCHW, logits) != ENV2_OK)
        return fprintf(stderr, "%s\n", env2_last_error()), 1;
    int best = 0;
    for (int k = 1; k < 1000; k++)
        if (logits[k] > logits[best]) best = k;
    printf("top class %d (logit %.4f)\n", best, logits[best]);
    free(image);
    env2_model_destroy(m);
    return 0;
}
