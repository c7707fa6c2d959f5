"""Deterministically writes qwen35_tune/assets/tokenizer_corpus.txt (all text written for this project).

Run: python scripts/generate_tokenizer_corpus.py qwen35_tune/assets/tokenizer_corpus.txt"""

from __future__ import annotations

import json
import random
import sys

R = random.Random(20260301)

EN_HAND = """\
The kettle clicked off just as the first train of the morning rolled past the kitchen window.
She kept a notebook for every experiment, even the ones that failed in the first five minutes.
If the bridge closes at nine, we'll have to take the long road around the lake.
Nobody expected the old lighthouse to be repainted, but by July it was bright red again.
Don't store the batteries next to the radiator; they're rated for twenty degrees at most.
It's easier to fix a small bug today than a large one next quarter.
The library opens at half past eight on weekdays and at ten on Saturdays.
He measured the room twice, wrote the numbers on the wall, and still ordered the wrong carpet.
A good recipe tells you what to do when things go wrong, not only when they go right.
The committee agreed on the budget after a meeting that lasted well into the evening.
We've moved the garden tools to the shed behind the greenhouse.
I'd rather walk in the rain than wait another hour for the bus.
The orchestra tuned for a long minute before the conductor raised her hands.
Our cat sleeps on the printer because it is the warmest place in the house.
When the tide goes out, the rock pools fill with tiny crabs and bright green weed.
The museum's new wing holds maps drawn by sailors who never saw the coast they described.
You'll need a ladder, a screwdriver, and a great deal of patience.
The forecast promised sunshine, so of course it snowed by lunchtime.
They're planning a picnic on the hill if the wind drops below twenty kilometres per hour.
Every spring the river floods the lower meadow and the herons come back.
The report was short, clear, and, for once, delivered before the deadline.
My grandmother's bread recipe uses no scales at all, only cups and a good memory.
A compiler is a patient reader: it reads every line and forgives nothing.
The hikers reached the ridge at dawn and watched the valley fill with light.
Please return the projector to room 204 when the seminar ends.
The village bakery sells out of rye loaves before seven o'clock most mornings.
Learning a language is mostly listening, then a little speaking, then a lot of mistakes.
The spreadsheet had three hidden columns that explained everything.
Someone left a violin case on the platform, and the station master kept it for a week.
Good documentation answers the question the reader will ask next.
The storm knocked out the power, so we played cards by candlelight until midnight.
Each volunteer brought a different soup, and none of them were the same colour.
The mountain hut has twelve beds, one stove, and a view that makes up for both.
The delivery van turned into the wrong street and reversed all the way back.
We tested the new pump for six hours and it never missed a beat.
The children built a raft from old barrels and named it The Unsinkable Tuesday.
Short functions are easier to test, and tested functions are easier to trust.
The pharmacist explained the dose twice and wrote it on the box in large letters.
By the time the paint dried, the colour looked nothing like the sample card.
If you can't find the key, check the pocket of the blue coat first.
The farmer's market moved indoors for the winter, next to the old fire station.
An honest estimate is worth more than an optimistic promise.
The astronomer counted forty-two meteors before the clouds rolled in.
Our team reviews every change before it is merged into the main branch.
The ferry leaves every forty minutes, except on Sundays, when it leaves every hour.
Who's bringing the chairs, and who's bringing the lemonade?
The clock in the tower has been five minutes fast since nineteen seventy-three.
A map is only useful if you know where you are standing on it.
The gardener planted tulips in rows of seven, because seven was her lucky number.
The river was too cold for swimming, so we skipped stones instead.
The blacksmith's apprentice quenched the glowing horseshoe in a bucket of murky water.
Volcanic ash drifted across the archipelago, grounding flights for almost a fortnight.
A cautious investor diversifies; a reckless one chases yesterday's headlines.
The violinist rehearsed the cadenza until her fingertips were numb.
Photosynthesis converts sunlight, water, and carbon dioxide into sugar and oxygen.
The cartographer squinted at the faded parchment and muttered about longitude.
Our quarterly newsletter features recipes, puzzles, and an interview with the beekeeper.
Glaciers carve U-shaped valleys, while rivers usually carve narrower V-shaped ones.
The locksmith opened the antique padlock with a bent paperclip and a grin.
Thunderstorms rumbled over the prairie, flattening acres of wheat and barley.
A thermostat compares the measured temperature with a setpoint and switches the boiler accordingly.
The jury deliberated for nineteen hours before announcing a unanimous verdict.
Migratory geese navigate using the sun, the stars, and the Earth's magnetic field.
The pottery workshop smelled of damp clay, woodsmoke, and strong coffee.
Vaccination campaigns eradicated smallpox and nearly eliminated polio worldwide.
The submarine descended slowly, its sonar pinging against the canyon walls.
An elegant proof often hides weeks of clumsy, abandoned attempts.
The embroidery depicted a peacock surrounded by vines, lilies, and tiny golden bees.
Freight trains rattled across the viaduct, carrying timber, coal, and shipping containers.
The archaeologists catalogued shards of amphorae, bronze coins, and a chipped ivory comb.
Hydraulic presses exert enormous force using incompressible fluids and small pistons.
The choreographer rearranged the finale so the dancers formed a spiral.
Quantum mechanics predicts probabilities, not certainties, for individual measurements.
Her grandfather whittled spoons, whistles, and miniature canoes from birch wood.
The encyclopedia's index is longer than most novels.
A gust of wind scattered the lecturer's handwritten transparencies across the auditorium.
The volunteers planted hawthorn, hazel, and blackthorn to rebuild the hedgerow.
Rust forms when iron reacts with oxygen and moisture over weeks or months.
The detective noticed the muddy footprints stopped abruptly beside the greenhouse.
Astronauts exercise daily aboard the station to slow the loss of bone density.
The auctioneer's gavel fell, and the tapestry sold for an astonishing sum.
Bicycles, scooters, and trams share the boulevard without much complaint.
The glassblower twirled the molten bulb and shaped it into a delicate vase.
Mushrooms sprouted overnight along the mossy trunk of the fallen oak.
Encryption scrambles plaintext into ciphertext that only the keyholder can unscramble.
The marathon runners sipped electrolytes at every checkpoint along the coastal route.
A well-tuned harpsichord sounds crisp, bright, and surprisingly loud.
The zookeeper weighed the penguins every Thursday and recorded each result.
Erosion gradually exposed fossilised ferns in the sandstone cliffs.
The tailor pinned the hem, chalked the sleeves, and promised the jacket by Friday.
Satellites relay television broadcasts, weather imagery, and navigation signals.
The monastery's scriptorium housed illuminated manuscripts and ink made from oak galls.
Typhoons, hurricanes, and cyclones are regional names for the same phenomenon.
The pharmacist double-checked the prescription against the patient's allergies.
Lanterns bobbed along the canal during the midsummer festival.
The sculptor chiselled marble for months, revealing a sleeping lion.
Inflation erodes purchasing power, especially for households with fixed incomes.
The orchard's irrigation pipes froze during the unexpected cold snap.
A skilful negotiator listens more than she speaks.
The telescope's mirror was ground, polished, and coated with aluminium.
Woodpeckers drum on hollow branches to announce their territory.
The electrician replaced the corroded fuse box and labelled every circuit.
Biodiversity surveys counted beetles, moths, spiders, and forty species of lichen.
The novelist rewrote the opening chapter seventeen times.
Sourdough rises slowly because wild yeast ferments the flour at its own pace.
The courier cycled through sleet to deliver the urgent envelope.
Algorithms that sort in place save memory but can be harder to reason about.
The stonemason restored the crumbling parapet using lime mortar.
Penguins huddle together to conserve warmth during the antarctic winter.
The symphony's third movement begins with a lonely oboe melody.
"""

FR_HAND = """\
Le boulanger ouvre sa boutique à six heures, même le dimanche.
Nous avons pris le train de nuit pour arriver à Marseille avant le lever du soleil.
Il faut relire le contrat avant de le signer, surtout la dernière page.
La bibliothèque municipale prête aussi des outils de jardinage.
Elle a appris à jouer du piano à l'âge de quarante ans, et elle joue tous les soirs.
Le marché du samedi est plus grand que celui du mercredi.
Pourquoi le café est-il toujours froid quand on a enfin le temps de le boire ?
Les enfants ont construit une cabane au fond du jardin avec de vieilles planches.
Le musée sera fermé lundi prochain pour des travaux d'entretien.
Je préfère marcher le long du canal plutôt que de prendre le bus.
Ce programme calcule la moyenne des notes et affiche le résultat.
Il pleut depuis trois jours, et la rivière commence à déborder.
Le professeur a expliqué la règle une deuxième fois, plus lentement.
Nous partirons à l'aube si la météo le permet.
La réunion a duré deux heures, mais nous avons enfin trouvé une solution.
Où avez-vous garé la voiture hier soir ?
Un bon exemple vaut mieux qu'une longue explication.
Les pommes de ce verger sont petites, mais elles sont très sucrées.
Le chat dort sur le radiateur depuis ce matin.
Les randonneurs ont traversé la forêt de châtaigniers avant d'atteindre le refuge.
L'horloger démonte soigneusement le mécanisme pour remplacer un ressort cassé.
Les vendanges commencent dès que les raisins atteignent la maturité idéale.
Le journaliste vérifie chaque source avant de publier son enquête.
La marée basse dévoile des rochers couverts d'algues et de coquillages.
Nous avons repeint les volets en bleu lavande pour égayer la façade.
L'infirmière surveille la tension artérielle des patients toutes les quatre heures.
Le fromager affine ses tommes pendant plusieurs mois dans une cave humide.
Les étudiants ont présenté leur projet de robotique devant un jury exigeant.
Le vent glacial soufflait sur la plaine, courbant les peupliers.
Une bonne nuit de sommeil améliore la mémoire et la concentration.
Le menuisier a fabriqué une bibliothèque en chêne massif.
Les hirondelles reviennent chaque printemps nicher sous le toit de la grange.
L'algorithme trie les éléments par ordre croissant en comparant les paires voisines.
La chorale répète le mardi soir dans la salle paroissiale.
Chaque été, le village organise une fête avec de la musique et des crêpes.
Elle a noté toutes les dépenses dans un cahier à spirale.
Le pont sera repeint en vert au printemps prochain.
Ça ne coûte rien de demander, et parfois on obtient une réponse utile.
Les élèves ont résolu le problème en moins de dix minutes.
Le vieux phare n'éclaire plus la côte, mais les touristes l'adorent.
"""

ZH_HAND = """\
今天早上下了一场小雨，空气变得很清新。
我们计划周末去山上徒步，如果天气好的话。
这本书讲的是一个小镇上的面包师和他的学徒。
请在会议开始前十分钟到达三楼的会议室。
他每天晚上都会花半个小时练习书法。
这个函数接收一个列表，并返回其中最大的数。
图书馆周一闭馆，其他时间从早上八点开放到晚上九点。
妈妈做的饺子比饭店里的还要好吃。
学习编程最重要的是多写代码，多读别人的代码。
火车晚点了二十分钟，但我们还是赶上了晚饭。
公园里的樱花开了，很多人在树下拍照。
请把报告保存为文本文件，然后发给我。
这个问题看起来很难，其实只需要一步一步地分析。
小明有十二支铅笔，送给同学五支，还剩几支？
我们的团队在每次提交代码之前都会进行评审。
秋天的时候，山上的树叶变成了红色和黄色。
他把钥匙忘在办公室了，只好回去拿。
这家咖啡店的老板每天都会换一首背景音乐。
数据清洗是训练模型之前必不可少的一步。
明天的天气预报说会有大风，出门记得多穿一件衣服。
孩子们在河边捡到了很多漂亮的石头。
每个函数都应该有一个清楚的名字和简短的说明。
这座桥建于一百多年前，现在仍然在使用。
她用一个下午的时间整理好了所有的照片。
科学家们在实验室里观察细胞分裂的过程，并记录下每一个阶段。
这条河流发源于高山冰川，最后汇入东边的大海。
春节期间，家家户户贴春联、放鞭炮、吃年夜饭。
工程师检查了桥梁的钢结构，发现有几处需要加固。
她在阳台上种了西红柿、辣椒和几盆薄荷。
博物馆展出了一批出土的青铜器和陶瓷碎片。
考试之前，同学们在自习室里复习到很晚。
这台旧收音机虽然外壳破损，但声音依然清晰。
海边的渔民天不亮就出海，傍晚才满载而归。
算法的时间复杂度决定了程序在大数据上的运行速度。
爷爷喜欢在院子里下象棋，一下就是一个下午。
沙漠里昼夜温差很大，白天炎热，夜晚寒冷。
这家医院新建了急诊楼，配备了先进的医疗设备。
蜜蜂在花丛中飞来飞去，忙着采集花粉和花蜜。
请仔细阅读说明书，按照步骤安装软件。
京剧的脸谱颜色丰富，每种颜色代表不同的性格。
地铁三号线延长后，从郊区到市中心只需要四十分钟。
他用望远镜观察土星的光环和木星的卫星。
湖面结了厚厚的冰，孩子们在上面滑冰、打雪仗。
这份合同的条款需要律师逐条审核。
如果你不确定答案，可以先写下你的思路。
"""

EN_SUBJECTS = ["the engineer", "my neighbour", "a small robot", "the new intern", "our teacher", "the night nurse",
               "the pilot", "a curious fox", "the librarian", "the town council", "the bus driver", "a young chef",
               "the lighthouse keeper", "the research team", "an old sailor", "the school choir", "the museum guide",
               "a tired student", "the mechanic", "the referee"]
EN_VERBS = ["repaired", "painted", "measured", "explained", "found", "carried", "cleaned", "counted", "described",
            "borrowed", "designed", "tested", "rebuilt", "photographed", "labelled", "sorted", "delivered", "sketched"]
EN_OBJECTS = ["the broken gate", "a wooden chair", "the weather station", "three copper pipes", "the garden wall",
              "a map of the harbour", "the spare tyre", "an old clock", "the ticket machine", "a box of letters",
              "the water pump", "the shelves in the hallway", "a kite made of paper", "the fishing nets",
              "the solar panel", "a jar of buttons", "the greenhouse roof", "the lecture notes"]
EN_TAILS = ["before lunch", "in the rain", "with great care", "for the third time this week", "after the storm",
            "without asking anyone", "while humming a song", "on a Tuesday morning", "just before the deadline",
            "under a bright moon", "with a borrowed hammer", "in under ten minutes", "as the sun went down",
            "while everyone else was asleep", "to everyone's surprise"]
EN_CONNECT = ["Later,", "Meanwhile,", "Afterwards,", "Unfortunately,", "Luckily,", "Then", "In the end,",
              "At first,", "Surprisingly,", "Even so,"]

FR_SUBJECTS = ["le facteur", "ma voisine", "un petit robot", "la directrice", "le jardinier", "une étudiante",
               "le capitaine", "la boulangère", "notre professeur", "le médecin"]
FR_VERBS = ["a réparé", "a peint", "a mesuré", "a expliqué", "a trouvé", "a nettoyé", "a compté", "a décrit",
            "a emprunté", "a dessiné"]
FR_OBJECTS = ["la vieille porte", "une chaise en bois", "la station météo", "trois tuyaux", "le mur du jardin",
              "une carte du port", "la pendule", "la boîte aux lettres", "les étagères", "un cerf-volant"]
FR_TAILS = ["avant le déjeuner", "sous la pluie", "avec beaucoup de soin", "pour la troisième fois",
            "après l'orage", "en moins de dix minutes", "au coucher du soleil", "à la surprise générale"]

ZH_SUBJECTS = ["工程师", "我的邻居", "一个小机器人", "新来的实习生", "我们的老师", "图书管理员", "公交司机",
               "年轻的厨师", "研究小组", "老船长"]
ZH_VERBS = ["修好了", "粉刷了", "测量了", "解释了", "找到了", "打扫了", "数了数", "描述了", "借走了", "设计了"]
ZH_OBJECTS = ["那扇旧门", "一把木椅", "气象站", "三根铜管", "花园的墙", "港口地图", "那台旧钟", "售票机",
              "一箱信件", "走廊里的书架"]
ZH_TAILS = ["在午饭前", "在雨中", "非常仔细地", "这周第三次", "在暴风雨之后", "在十分钟之内", "在太阳落山时"]

NAMES = ["Ada", "Ben", "Chloé", "Dmitri", "Elena", "Farid", "Grace", "Hiro", "Inès", "Jonas", "Kemi", "Liam", "Mei",
         "Nora", "Omar", "Priya", "Quentin", "Rosa", "Sami", "Tomás", "Uma", "Victor", "Wen", "Yusuf", "Zoe"]
ITEMS = [("apple", "apples"), ("pencil", "pencils"), ("marble", "marbles"), ("book", "books"), ("stamp", "stamps"),
         ("cookie", "cookies"), ("seed packet", "seed packets"), ("shell", "shells"), ("ticket", "tickets"),
         ("sticker", "stickers"), ("bottle", "bottles"), ("card", "cards")]


def en_sentence() -> str:
    s = f"{R.choice(EN_SUBJECTS)} {R.choice(EN_VERBS)} {R.choice(EN_OBJECTS)} {R.choice(EN_TAILS)}."
    return s[0].upper() + s[1:]


def en_paragraph() -> str:
    parts = [en_sentence()]
    for _ in range(R.randint(1, 3)):
        nxt = en_sentence()
        parts.append(f"{R.choice(EN_CONNECT)} {nxt[0].lower()}{nxt[1:]}")
    return " ".join(parts)


def fr_sentence() -> str:
    s = f"{R.choice(FR_SUBJECTS)} {R.choice(FR_VERBS)} {R.choice(FR_OBJECTS)} {R.choice(FR_TAILS)}."
    return s[0].upper() + s[1:]


def zh_sentence() -> str:
    return f"{R.choice(ZH_SUBJECTS)}{R.choice(ZH_TAILS)}{R.choice(ZH_VERBS)}{R.choice(ZH_OBJECTS)}。"


def word_problem() -> str:
    """Small arithmetic word problems with a worked answer, the kind a tiny model can be trained on."""
    kind = R.randrange(5)
    a, b = R.sample(NAMES, 2)
    one, many = R.choice(ITEMS)
    if kind == 0:
        x, y = R.randint(5, 90), R.randint(2, 40)
        return (f"{a} has {x} {many} and buys {y} more. How many {many} does {a} have now? "
                f"{x} + {y} = {x + y}. Answer: {x + y}")
    if kind == 1:
        x = R.randint(20, 120)
        y = R.randint(1, x - 1)
        return (f"{a} had {x} {many} and gave {y} to {b}. How many {many} are left? "
                f"{x} - {y} = {x - y}. Answer: {x - y}")
    if kind == 2:
        x, y = R.randint(2, 12), R.randint(3, 25)
        return (f"There are {x} boxes with {y} {many} in each box. How many {many} are there in total? "
                f"{x} × {y} = {x * y}. Answer: {x * y}")
    if kind == 3:
        y = R.randint(2, 9)
        q = R.randint(3, 30)
        return (f"{a} shares {q * y} {many} equally among {y} friends. How many does each friend get? "
                f"{q * y} ÷ {y} = {q}. Answer: {q}")
    price, n = R.randint(2, 19), R.randint(2, 9)
    paid = (price * n // 10 + 1) * 10
    return (f"One {one} costs ${price}. {a} buys {n} of them and pays with ${paid}. How much change does {a} get? "
            f"{n} × {price} = {n * price}, and {paid} - {n * price} = {paid - n * price}. Answer: {paid - n * price}")


def zh_problem() -> str:
    x, y = R.randint(10, 60), R.randint(1, 9)
    return f"{R.choice(['小明', '小红', '小刚', '小丽'])}有{x}个苹果，吃了{y}个，还剩几个？{x}-{y}={x - y}，答：还剩{x - y}个。"


def fr_problem() -> str:
    x, y = R.randint(3, 12), R.randint(2, 15)
    return f"{R.choice(NAMES)} achète {x} cahiers à {y} euros chacun. Combien paie-t-il ? {x} × {y} = {x * y}. Réponse : {x * y}"


def numbers_line() -> str:
    kind = R.randrange(5)
    if kind == 0:
        return f"Order #{R.randint(10000, 99999)} shipped on {R.randint(2019, 2026)}-{R.randint(1, 12):02d}-{R.randint(1, 28):02d}."
    if kind == 1:
        vals = [round(R.uniform(-50, 150), R.choice([1, 2, 3])) for _ in range(R.randint(3, 7))]
        return "Readings: " + ", ".join(str(v) for v in vals)
    if kind == 2:
        return f"The population grew from {R.randint(1000, 9999):,} to {R.randint(10000, 99999):,} in {R.randint(3, 40)} years."
    if kind == 3:
        return f"{R.randint(1, 99)}% of {R.randint(100, 5000)} is {R.randint(1, 4000)}; π ≈ 3.14159, e ≈ 2.71828."
    return f"Call extension {R.randint(100, 999)} between {R.randint(8, 11)}:{R.choice(['00', '15', '30', '45'])} and {R.randint(13, 18)}:00."


FUNC_NAMES = ["mean", "clamp", "chunked", "word_count", "is_palindrome", "flatten", "dedupe", "running_total",
              "safe_div", "normalise_path", "parse_pairs", "top_k"]

PY_HAND = [
    '''def top_k(scores: dict[str, float], k: int = 3) -> list[tuple[str, float]]:
    ranked = sorted(scores.items(), key=lambda kv: kv[1], reverse=True)
    return ranked[:k]''',
    '''def flatten(nested):
    out = []
    for item in nested:
        if isinstance(item, (list, tuple)):
            out.extend(flatten(item))
        else:
            out.append(item)
    return out''',
    '''with open("metrics.csv", newline="") as handle:
    reader = csv.DictReader(handle)
    losses = [float(row["loss"]) for row in reader]
print(min(losses), statistics.median(losses))''',
    '''def running_total(xs):
    total = 0
    for x in xs:
        total += x
        yield total''',
    '''class Stack:
    def __init__(self):
        self._items = []

    def push(self, item):
        self._items.append(item)

    def pop(self):
        if not self._items:
            raise IndexError("pop from empty stack")
        return self._items.pop()

    def __len__(self):
        return len(self._items)''',
    '''def parse_pairs(line: str) -> dict[str, str]:
    # "a=1; b=2" -> {"a": "1", "b": "2"}
    pairs = (part.split("=", 1) for part in line.split(";") if "=" in part)
    return {k.strip(): v.strip() for k, v in pairs}''',
    '''try:
    config = yaml.safe_load(Path("recipe.yaml").read_text())
except FileNotFoundError as err:
    logging.warning("no recipe found: %s", err)
    config = {}''',
    '''def binary_search(arr, target):
    lo, hi = 0, len(arr) - 1
    while lo <= hi:
        mid = (lo + hi) // 2
        if arr[mid] == target:
            return mid
        if arr[mid] < target:
            lo = mid + 1
        else:
            hi = mid - 1
    return -1''',
    '''import torch

x = torch.randn(4, 8)
w = torch.nn.Linear(8, 2)
logits = w(x)
probs = torch.softmax(logits, dim=-1)''',
    '''def mean(values: list[float]) -> float:
    """Average of a non-empty list."""
    if not values:
        raise ValueError("mean of an empty list")
    return sum(values) / len(values)''',
    '''def clamp(x: int, low: int, high: int) -> int:
    return max(low, min(high, x))''',
    '''def chunked(items, size):
    for start in range(0, len(items), size):
        yield items[start:start + size]''',
    '''def word_count(text: str) -> dict[str, int]:
    counts: dict[str, int] = {}
    for word in text.lower().split():
        counts[word] = counts.get(word, 0) + 1
    return counts''',
    '''def is_palindrome(s: str) -> bool:
    cleaned = [c for c in s.lower() if c.isalnum()]
    return cleaned == cleaned[::-1]''',
    '''class Counter:
    def __init__(self, start=0):
        self.value = start

    def increment(self, step=1):
        self.value += step
        return self.value''',
    '''import json
from pathlib import Path


def load_rows(path: Path) -> list[dict]:
    with path.open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]''',
    '''for i in range(1, 16):
    if i % 15 == 0:
        print("FizzBuzz")
    elif i % 3 == 0:
        print("Fizz")
    elif i % 5 == 0:
        print("Buzz")
    else:
        print(i)''',
    '''def safe_div(a: float, b: float, default: float = 0.0) -> float:
    try:
        return a / b
    except ZeroDivisionError:
        return default''',
    '''@dataclass
class Point:
    x: float
    y: float

    def distance(self, other: "Point") -> float:
        return ((self.x - other.x) ** 2 + (self.y - other.y) ** 2) ** 0.5''',
    '''squares = {n: n * n for n in range(10)}
evens = [n for n in squares if n % 2 == 0]
print(f"{len(evens)} even keys, largest square {max(squares.values())}")''',
    '''async def fetch_all(client, urls):
    tasks = [client.get(url) for url in urls]
    return await asyncio.gather(*tasks)''',
]


def py_generated() -> str:
    name = R.choice(["total", "score", "count", "offset", "limit", "width", "height", "index"])
    k = R.randint(2, 9)
    return (f"def scaled_{name}({name}: int, factor: int = {k}) -> int:\n"
            f"    # multiply {name} by factor, never below zero\n"
            f"    result = {name} * factor\n"
            f"    return result if result > 0 else 0\n\n"
            f"assert scaled_{name}({R.randint(1, 20)}) > 0")


def json_line() -> str:
    kind = R.randrange(3)
    if kind == 0:
        obj = {"id": R.randint(1, 9999), "name": R.choice(NAMES), "active": R.random() > 0.5,
               "score": round(R.uniform(0, 100), 2), "tags": R.sample(["red", "blue", "fast", "new", "beta"], 2)}
    elif kind == 1:
        city = R.choice(["Paris", "Lyon", "Beijing", "Shanghai", "Toronto", "Nairobi", "Lima", "Oslo"])
        obj = {"name": "get_weather", "arguments": {"city": city, "unit": R.choice(["celsius", "fahrenheit"])}}
    else:
        obj = {"role": R.choice(["user", "assistant", "system"]), "content": en_sentence()}
    return json.dumps(obj, ensure_ascii=R.random() < 0.3)


def tool_markup() -> str:
    city = R.choice(["Paris", "Lyon", "Toronto", "Oslo"])
    return (f"<function=get_weather>\n<parameter=city>\n{city}\n</parameter>\n"
            f"<parameter=days>\n{R.randint(1, 7)}\n</parameter>\n</function>")


def markdown_block() -> str:
    title = R.choice(["Installation", "Usage", "Results", "Notes", "Changelog", "Troubleshooting"])
    rows = "\n".join(f"| {R.choice(NAMES)} | {R.randint(1, 99)} | {round(R.uniform(0, 1), 3)} |" for _ in range(3))
    return (f"## {title}\n\n- {en_sentence()}\n- {en_sentence()}\n\n| name | runs | ratio |\n|---|---|---|\n{rows}\n\n"
            f"Run `python -m tool --steps {R.randint(10, 500)}` and check **the log** for *warnings*.")


def main(out: str) -> None:
    blocks: list[str] = []
    blocks += EN_HAND.strip().splitlines()
    blocks += FR_HAND.strip().splitlines()
    blocks += ZH_HAND.strip().splitlines()
    blocks += PY_HAND
    generators = [(en_paragraph, 160), (fr_sentence, 60), (zh_sentence, 60), (word_problem, 220), (zh_problem, 30),
                  (fr_problem, 30), (numbers_line, 80), (py_generated, 25), (json_line, 90), (tool_markup, 10),
                  (markdown_block, 25)]
    for gen, n in generators:
        blocks += [gen() for _ in range(n)]
    R.shuffle(blocks)
    with open(out, "w", encoding="utf-8", newline="\n") as f:
        f.write("\n\n".join(blocks) + "\n")


if __name__ == "__main__":
    main(sys.argv[1])
