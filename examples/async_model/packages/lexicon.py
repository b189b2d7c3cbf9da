"""A tiny word-score lexicon: importable because it lives under the folder's packages/."""


def parse(text):
    scores = {}
    for line in text.splitlines():
        word, score = line.split("\t")
        scores[word] = int(score)
    return scores


def score(scores, sentence):
    return sum(scores.get(word.strip(".,!?").lower(), 0) for word in sentence.split())
