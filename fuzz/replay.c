/* SPDX-License-Identifier: GPL-2.0-or-later */
/* Replays every file of the given corpus directories through the harness. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <glib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int main(int argc, char **argv)
{
        unsigned n = 0;

        for (int i = 1; i < argc; i++) {
                g_autoptr(GDir) dir = NULL;
                g_autoptr(GError) error = NULL;
                const char *name;

                dir = g_dir_open(argv[i], 0, &error);
                if (!dir) {
                        fprintf(stderr, "cannot open corpus %s: %s\n", argv[i], error->message);
                        return EXIT_FAILURE;
                }
                while ((name = g_dir_read_name(dir))) {
                        g_autofree char *path = g_build_filename(argv[i], name, NULL);
                        g_autofree char *data = NULL;
                        gsize len;

                        if (!g_file_get_contents(path, &data, &len, &error)) {
                                fprintf(stderr, "cannot read %s: %s\n", path, error->message);
                                return EXIT_FAILURE;
                        }
                        LLVMFuzzerTestOneInput((const uint8_t *) data, len);
                        n++;
                }
        }
        if (n == 0) {
                fprintf(stderr, "no samples replayed\n");
                return EXIT_FAILURE;
        }
        printf("replayed %u samples\n", n);
        return EXIT_SUCCESS;
}
