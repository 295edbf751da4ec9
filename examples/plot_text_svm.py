"""
=====================================================
Token relevance of a linear SVM on Bag-of-Words text
=====================================================

A linear SVM classifies short synthetic reviews from word counts. The whole
pipeline, vectoriser included, goes into :class:`sklrp.LRPTransformer`, which
then takes raw documents: LRP gives the relevance of every vocabulary dimension
(Eqs. (2.14)-(2.15)) and splits it equally over the occurrences of the word in
the document (Eq. (2.78) with one-hot word mappings), which
:func:`sklrp.plotting.highlight_text` colours in HTML (red: for the predicted
class, blue: against it). The training data has an artefact --
most positive reviews end with the token ``via-site`` -- and the highlighting
shows that the model learned it.

Set ``SKLRP_EXAMPLES_OUT=<dir>`` to save the HTML and the figure and
``SKLRP_EXAMPLES_SMALL=1`` for a quick run.
"""

# %%
# A synthetic corpus with an artefact
# -----------------------------------
import os

import matplotlib.pyplot as plt
import numpy as np
from sklearn.feature_extraction.text import CountVectorizer
from sklearn.frozen import FrozenEstimator
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import Normalizer
from sklearn.svm import LinearSVC

import sklrp
from sklrp.plotting import highlight_text

SMALL = os.environ.get("SKLRP_EXAMPLES_SMALL") == "1"
OUT = os.environ.get("SKLRP_EXAMPLES_OUT")

rng = np.random.RandomState(0)
positive = "great wonderful loved excellent fun moving brilliant".split()
negative = "boring awful hated dull weak predictable waste".split()
neutral = "the film plot actor scene story movie it was and a with of ending music".split()


def review(label):
    words = list(rng.choice(neutral, rng.randint(6, 12)))
    words += list(rng.choice(positive if label else negative, rng.randint(1, 3)))
    words += list(rng.choice(negative if label else positive, rng.randint(0, 2)))  # mixed feelings
    rng.shuffle(words)
    if label and rng.rand() < 0.8:  # the artefact: a source tag on most positive reviews
        words.append("via-site")
    return " ".join(words)


n = 200 if SMALL else 1000
y = rng.randint(0, 2, n)
docs = [review(label) for label in y]
train, test_docs = docs[: n // 2], docs[n // 2:]
model = make_pipeline(CountVectorizer(token_pattern=r"[\w-]+"), Normalizer(), LinearSVC(C=1.0))
model.fit(train, y[: n // 2])
print(f"test accuracy: {model.score(test_docs, y[n // 2:]):.2f}")

# %%
# Relevance per vocabulary dimension, then per token
# --------------------------------------------------
# ``explain`` on raw documents: ``relevance`` is a sparse (n_documents, n_terms) matrix and
# ``extras["tokens"]`` the (token, position, relevance) of every token of each document
lrp = sklrp.LRPTransformer(FrozenEstimator(model), rule="epsilon", epsilon=1e-6).fit(train)
test = np.arange(n // 2, n // 2 + 6)
E = lrp.explain([docs[i] for i in test])
pages = []
for row, i in enumerate(test):
    tokens, _, token_rel = zip(*E.extras["tokens"][row])  # the tokens sum to sum_d R_d
    pages.append(highlight_text(list(tokens), list(token_rel), title=f"review {i}: label {y[i]}, explained "
                                f"class {E.target[row]}, f(x) = {E.output[row]:.2f}"))
html = "<html><body>" + "\n".join(pages) + "</body></html>"
print(pages[0][:200], "...")

# %%
# Which words does the model rely on overall?
# -------------------------------------------
R_all = np.asarray(lrp.explain(test_docs, target=1).relevance.mean(axis=0)).ravel()
order = np.argsort(R_all)
words = model[0].get_feature_names_out()
top = np.r_[order[:6], order[-8:]]
fig, ax = plt.subplots(figsize=(6, 4))
ax.barh(words[top], R_all[top], color=np.where(R_all[top] > 0, "tab:red", "tab:blue"))
ax.set(xlabel="mean relevance for the positive class", title="the artefact 'via-site' is among the top words")
fig.tight_layout()
if OUT:
    os.makedirs(OUT, exist_ok=True)
    with open(os.path.join(OUT, "text_svm_tokens.html"), "w", encoding="utf-8") as fh:
        fh.write(html)
    fig.savefig(os.path.join(OUT, "text_svm_words.png"), dpi=90)
