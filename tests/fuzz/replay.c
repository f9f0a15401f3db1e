/* SPDX-License-Identifier: MIT */
/*
 * replay.c: the main() that turns a fuzz target into a regular test.
 *
 * Each argument is a file, or a directory whose regular files are inputs
 * (not recursively, in name order, hidden files skipped). Each input is run once through
 * LLVMFuzzerTestOneInput() from a buffer of exactly its size, so the
 * sanitizers see any read past the end. An input "fails" only by crashing
 * or tripping a sanitizer or an assert in the target; the exit code is
 * non-zero otherwise only when an argument cannot be read, so that a
 * misspelt corpus path does not pass as zero inputs.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Runs one input file. Returns 0 or -errno. */
static int run_file(int dir_fd, const char *path)
{
        _cleanup_close_ int fd = -1;
        _cleanup_free_ uint8_t *data = NULL;
        struct stat st;
        size_t size, done = 0;

        fd = openat(dir_fd, path, O_RDONLY | O_CLOEXEC);
        if (fd < 0)
                return -errno;
        if (fstat(fd, &st) < 0)
                return -errno;
        size = (size_t) st.st_size;
        /* At least one byte, so that an empty input still has a valid pointer. */
        data = malloc(size > 0 ? size : 1);
        if (!data)
                return -ENOMEM;
        while (done < size) {
                ssize_t n = read(fd, data + done, size - done);

                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0)
                        return -errno;
                if (n == 0)
                        break; /* the file shrank: run what is there */
                done += (size_t) n;
        }
        (void) LLVMFuzzerTestOneInput(data, done);
        return 0;
}

/* ".", ".." and hidden files such as .gitignore are not inputs. */
static int not_hidden(const struct dirent *de)
{
        return de->d_name[0] != '.';
}

/* Runs every regular file in a directory; returns how many, or -errno. */
static int run_dir(const char *path)
{
        _cleanup_close_ int dir_fd = -1;
        struct dirent **names = NULL;
        int n, ran = 0, r = 0;

        dir_fd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (dir_fd < 0)
                return -errno;
        n = scandir(path, &names, not_hidden, alphasort);
        if (n < 0)
                return -errno;
        for (int i = 0; i < n; i++) {
                struct stat st;

                if (r >= 0 && fstatat(dir_fd, names[i]->d_name, &st, 0) == 0 &&
                    S_ISREG(st.st_mode)) {
                        r = run_file(dir_fd, names[i]->d_name);
                        if (r < 0)
                                fprintf(stderr, "%s/%s: %s\n", path, names[i]->d_name,
                                        strerror(-r));
                        else
                                ran++;
                }
                free(names[i]);
        }
        free(names);
        return r < 0 ? r : ran;
}

int main(int argc, char **argv)
{
        unsigned long total = 0;
        int failed = 0;

        for (int i = 1; i < argc; i++) {
                struct stat st;
                int r;

                if (stat(argv[i], &st) < 0)
                        r = -errno;
                else if (S_ISDIR(st.st_mode))
                        r = run_dir(argv[i]);
                else {
                        r = run_file(AT_FDCWD, argv[i]);
                        if (r >= 0)
                                r = 1;
                }
                if (r < 0) {
                        fprintf(stderr, "%s: %s\n", argv[i], strerror(-r));
                        failed = 1;
                        continue;
                }
                total += (unsigned long) r;
        }
        printf("%lu inputs ran\n", total);
        return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
