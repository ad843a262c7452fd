"""Write the demo data set `data/demo/{train,validation,test}.jsonl`: news-style sentences with a topic and BIO tags.

Every sentence is built here from our own templates and name lists (no text from any corpus). Rows are JSON Lines
`{"tokens": [...], "tags": [...], "topic": "..."}` with PER / ORG / LOC / MISC tags in IOB2. The output is the same
on every run: `python data/generate_demo.py [--out FOLDER]`.

What keeps the task from being trivial: each topic has many templates and word pools (no single word marks a
topic), some templates are shared by all topics and differ only in their topic words, a quarter of every name list
appears only in validation and test, and a few sentences mention entities usually seen with another topic.
"""

import argparse
import json
import random
import re
from pathlib import Path

SIZES = {"train": 1200, "validation": 250, "test": 250}
SEEDS = {"train": 11, "validation": 22, "test": 33}
HELD_OUT_SHARE = 0.25  # last quarter of each name list: validation and test only
HELD_OUT_PICK = 0.4  # how often validation / test draw from it

FIRST_NAMES = [
    "Anna", "Marco", "Yuki", "Kwame", "Lena", "Tomas", "Priya", "Diego", "Ingrid", "Omar", "Sofia", "Hiro", "Nadia",
    "Pavel", "Amara", "Lucas", "Mei", "Jonas", "Leila", "Rafael", "Greta", "Samir", "Elena", "Kofi", "Ines", "Viktor",
    "Aiko", "Mateo", "Zara", "Felix", "Olga", "Tariq", "Clara", "Bruno", "Hana", "Emeka",
]
LAST_NAMES = [
    "Okafor", "Lindqvist", "Moreau", "Tanaka", "Brennan", "Castillo", "Novak", "Haddad", "Fischer", "Mensah", "Ortega",
    "Kowalski", "Ibarra", "Sato", "Varga", "Quinn", "Adeyemi", "Larsen", "Rossi", "Petrov", "Nakamura", "Dubois",
    "Alvarez", "Hoffmann", "Osei", "Marsh", "Kaur", "Silva", "Berg", "Farouk", "Delgado", "Yilmaz",
]
CITIES = [
    "Berlin", "Nairobi", "Lima", "Osaka", "Oslo", "Toronto", "Cairo", "Madrid", "Sydney", "Mumbai", "Warsaw", "Lagos",
    "Hanoi", "Dublin", "Vienna", "Seoul", "Lisbon", "Quito", "Accra", "Buenos Aires", "Rio de Janeiro", "Cape Town",
    "Hong Kong", "Montreal", "Prague", "Manila", "Tunis", "Helsinki",
]
COUNTRIES = [
    "Brazil", "Kenya", "Norway", "Vietnam", "Chile", "Canada", "Poland", "Egypt", "Japan", "Ghana", "Portugal", "Peru",
    "New Zealand", "South Africa", "Ireland", "Austria", "Finland", "Morocco", "Mexico", "Indonesia",
]
NATIONALITIES = [
    "German", "Brazilian", "Kenyan", "Japanese", "Norwegian", "Chilean", "Canadian", "Polish", "Egyptian", "Ghanaian",
    "Irish", "Peruvian", "Finnish", "Mexican", "Austrian", "Vietnamese",
]
NEWSPAPERS = ["Morning Herald", "City Gazette", "Evening Courier", "Coastal Tribune", "Daily Ledger", "Northern Star"]

# Entities that mostly go with one topic; sentences of other topics borrow them now and then.
TEAMS = [
    "Riverside Rovers", "Northgate United", "Eastbrook Athletic", "Valley Comets", "Portmere", "Redhill Wanderers",
    "Ashford Lions", "Lakeshore Stars", "Kingsbridge City", "Harborview Falcons", "Stonefield Rangers", "Westmoor",
    "Oakdale Titans", "Silverton Albion", "Pinecrest Hawks", "Marlow Town",
]
SPORTS_BODIES = [
    "National Football Federation", "Continental Athletics Board", "Olympic Committee", "Premier Rugby League",
]
SPORTS_EVENTS = [
    "World Cup", "Summer Games", "Continental Cup", "Grand Prix", "Winter Games", "Open Championship", "Super Cup",
    "Island Marathon",
]
PARTIES = [
    "National Renewal Party", "Green Alliance", "Liberal Union", "Workers Front", "Democratic Centre",
    "Unity Movement",
    "Progressive Bloc", "Citizens League", "Rural Party", "Reform Coalition",
]
INSTITUTIONS = [
    "Electoral Commission", "Supreme Court", "Finance Ministry", "Justice Ministry", "Senate", "Foreign Ministry",
    "Constitutional Council", "Interior Ministry", "Audit Office", "Central Assembly",
]
LAWS = [
    "Open Data Act", "Coastal Treaty", "Clean Air Bill", "Harbor Accord", "Pension Reform Act", "Border Pact",
    "Water Charter", "Budget Law",
]
TECH_COMPANIES = [
    "Nordwind Systems", "Quantix Labs", "Brightwave", "Cobaltsoft", "Helix Robotics", "Pixelforge", "Orbital Data",
    "Synapse Networks", "Lumina Semiconductors", "Cloudberry", "Vantage Micro", "Arclight Software", "Tessera AI",
    "Kestrel Devices",
]
PRODUCTS = [
    "Lumen 5", "Aurora OS", "Nova Tab", "Quark chip", "Falcon browser", "Echo Hub", "Zenith Cloud", "Atlas X1",
    "Pulse Watch", "Orion headset",
]
TECH_EVENTS = ["Future Tech Expo", "Developer Summit", "Silicon Week", "Mobile Forum"]
FIRMS = [
    "Bluecrest Bank", "Meridian Holdings", "Goldfield Mining", "Crestline Motors", "Silverleaf Foods",
    "Atlas Insurance",
    "Evergreen Retail", "Harbor Shipping", "Summit Energy", "Ironbridge Steel", "Pacific Textiles", "Granite Capital",
    "Sunfield Airlines", "Copperline Telecom",
]
BUSINESS_BODIES = ["Central Bank", "Stock Exchange", "Trade Ministry", "Competition Authority", "Chamber of Commerce"]
INDICES = ["Global 100 index", "Metro Composite", "Prime 40 index", "Continental Bond index"]

# Entity slots: name -> (tag type, names).
ENTITY_LISTS = {
    "CITY": ("LOC", CITIES), "COUNTRY": ("LOC", COUNTRIES), "NATIONALITY": ("MISC", NATIONALITIES),
    "PAPER": ("ORG", NEWSPAPERS), "TEAM": ("ORG", TEAMS), "SPORTS_BODY": ("ORG", SPORTS_BODIES),
    "SPORTS_EVENT": ("MISC", SPORTS_EVENTS), "PARTY": ("ORG", PARTIES), "INSTITUTION": ("ORG", INSTITUTIONS),
    "LAW": ("MISC", LAWS), "TECH_COMPANY": ("ORG", TECH_COMPANIES), "PRODUCT": ("MISC", PRODUCTS),
    "TECH_EVENT": ("MISC", TECH_EVENTS), "FIRM": ("ORG", FIRMS), "BUSINESS_BODY": ("ORG", BUSINESS_BODIES),
    "INDEX": ("MISC", INDICES),
}

# Word pools (tag O). Keys shared by all topics ("role", "act", "thing", ...) make the shared templates topical.
COMMON_WORDS = {
    "day": [
        "on Monday", "on Tuesday", "on Wednesday", "on Thursday", "on Friday", "at the weekend", "last week",
        "on Sunday", "late on Saturday", "this morning",
    ],
    "said": [
        "said", "told reporters", "said in a statement", "told a news conference", "wrote", "confirmed", "insisted",
        "announced",
    ],
    "num": ["two", "three", "four", "five", "12", "18", "40", "nine", "seven", "25"],
}
TOPIC_WORDS = {
    "sports": {
        "role": [
            "striker", "midfielder", "goalkeeper", "captain", "coach", "sprinter", "defender", "winger", "manager",
            "swimmer",
        ],
        "act": [
            "scored twice", "netted a late winner", "was sent off", "signed a new contract", "suffered a knee injury",
            "set a national record", "won gold", "missed a penalty", "returned from injury",
            "was named player of the month",
        ],
        "thing": [
            "match", "final", "semi-final", "derby", "fixture", "league title", "relay", "transfer", "season opener",
            "penalty shootout",
        ],
        "beat": [
            "beat", "defeated", "edged", "thrashed", "held off", "drew with", "lost to", "came from behind to beat",
        ],
        "score": ["1-0", "2-1", "3-2", "2-0", "4-1", "0-0", "1-1", "3-0"],
        "mood": [
            "fans cheered", "the crowd was stunned", "the home side celebrated", "supporters sang",
            "the stadium fell silent",
        ],
        "issue": [
            "ticket prices", "the transfer window", "referee decisions", "the injury list", "training schedules",
            "the new stadium",
        ],
    },
    "politics": {
        "role": [
            "minister", "senator", "prime minister", "opposition leader", "mayor", "governor", "spokesman", "lawmaker",
            "president", "deputy",
        ],
        "act": [
            "called for early elections", "resigned", "survived a vote of confidence", "proposed a tax reform",
            "vetoed the bill", "signed a decree", "launched a campaign", "formed a coalition", "lost the runoff",
            "promised new housing",
        ],
        "thing": [
            "election", "referendum", "cabinet reshuffle", "coalition talks", "budget debate", "parliamentary vote",
            "campaign", "ballot recount", "state visit", "summit",
        ],
        "beat": [
            "criticised", "defeated", "accused", "backed", "challenged", "endorsed", "outpolled", "negotiated with",
        ],
        "score": [
            "52 percent", "48 percent", "61 percent", "a narrow majority", "a two-thirds majority", "39 percent",
        ],
        "mood": [
            "voters queued for hours", "protesters gathered", "turnout was low", "the opposition walked out",
            "lawmakers applauded",
        ],
        "issue": [
            "pension reform", "border security", "public spending", "voting rights", "the new constitution",
            "local taxes",
        ],
    },
    "technology": {
        "role": [
            "engineer", "researcher", "developer", "chief technology officer", "founder", "security analyst",
            "product manager", "designer", "programmer", "scientist",
        ],
        "act": [
            "unveiled a faster chip", "released a software update", "patched a security flaw",
            "launched a cloud service", "open-sourced its code", "recalled faulty batteries",
            "demonstrated a humanoid robot", "shipped a new operating system", "cut data centre energy use",
            "announced a satellite network",
        ],
        "thing": [
            "smartphone", "processor", "app", "data centre", "algorithm", "chatbot", "satellite", "robot", "browser",
            "encryption standard",
        ],
        "beat": [
            "outpaced", "licensed software from", "sued", "partnered with", "overtook", "acquired a startup from",
            "benchmarked against", "teamed up with",
        ],
        "score": [
            "ten times faster", "twice as efficient", "40 percent smaller", "much cheaper", "half as heavy",
            "far more secure",
        ],
        "mood": [
            "users reported outages", "developers praised the tools", "the demo crashed twice",
            "early testers were impressed", "the servers slowed down",
        ],
        "issue": ["data privacy", "battery life", "software bugs", "chip supply", "online security", "open standards"],
    },
    "business": {
        "role": [
            "chief executive", "analyst", "chief financial officer", "investor", "chairman", "economist", "trader",
            "board member", "shareholder", "fund manager",
        ],
        "act": [
            "reported record profits", "cut 300 jobs", "raised its forecast", "missed earnings estimates",
            "issued new bonds", "paid a special dividend", "agreed a takeover", "closed two factories",
            "posted a quarterly loss", "expanded into new markets",
        ],
        "thing": [
            "merger", "quarterly results", "share offering", "takeover bid", "interest rate decision", "dividend",
            "bond sale", "trade deal", "earnings call", "price war",
        ],
        "beat": [
            "outperformed", "agreed to buy", "sold a stake to", "merged with", "undercut", "raised prices against",
            "bid for", "signed a supply deal with",
        ],
        "score": [
            "4.5 billion dollars", "12 percent", "a record 900 million euros", "three percent", "1.2 billion dollars",
            "half a percent",
        ],
        "mood": [
            "shares jumped", "markets fell sharply", "bond yields rose", "the currency weakened", "investors sold off",
        ],
        "issue": ["inflation", "interest rates", "supply chains", "wage growth", "oil prices", "consumer demand"],
    },
}
# Entity slots each topic prefers for its generic {ORG}, {EVENT} and {MISC} slots.
TOPIC_ENTITIES = {
    "sports": {"ORG": ["TEAM", "TEAM", "SPORTS_BODY"], "EVENT": ["SPORTS_EVENT"]},
    "politics": {"ORG": ["PARTY", "INSTITUTION"], "EVENT": ["LAW"]},
    "technology": {"ORG": ["TECH_COMPANY", "TECH_COMPANY", "PAPER"], "EVENT": ["PRODUCT", "TECH_EVENT"]},
    "business": {"ORG": ["FIRM", "FIRM", "BUSINESS_BODY"], "EVENT": ["INDEX", "PRODUCT"]},
}

TEMPLATES = {
    "sports": [
        "{PER} {act} as {TEAM} {beat} {TEAM} {score} in {CITY} {day} .",
        "{TEAM} {role} {PER} {said} the {thing} against {TEAM} would decide the season .",
        "{NATIONALITY} {role} {PER} {act} at the {SPORTS_EVENT} in {CITY} .",
        "The {SPORTS_BODY} fined {TEAM} after the {thing} in {CITY} {day} .",
        "{TEAM} {beat} {TEAM} {score} and {mood} .",
        "{LASTNAME} {act} before {TEAM} travel to {COUNTRY} for the {SPORTS_EVENT} .",
        "After the {score} {thing} , {role} {PER} {said} {mood} .",
        "{COUNTRY} will host the {SPORTS_EVENT} , the {SPORTS_BODY} {said} {day} .",
        "{PER} , the {NATIONALITY} {role} , {act} in the {thing} .",
        "Injury forced {LASTNAME} out of the {thing} , leaving {TEAM} short of a {role} .",
        "{TEAM} signed {PER} from {TEAM} ahead of the {SPORTS_EVENT} .",
        "In {CITY} , {TEAM} {beat} {TEAM} {score} in front of {num} thousand fans .",
    ],
    "politics": [
        "{role} {PER} of the {PARTY} {act} {day} .",
        "The {PARTY} {beat} the {PARTY} over {issue} ahead of the {thing} in {COUNTRY} .",
        "{PER} {said} the {LAW} would pass the {INSTITUTION} {day} .",
        "{NATIONALITY} {role} {PER} {act} after the {thing} .",
        "The {INSTITUTION} in {CITY} rejected the {LAW} by {score} .",
        "{LASTNAME} won {score} of the vote as {mood} in {CITY} .",
        "During the {thing} , the {PARTY} {beat} {role} {PER} over {issue} .",
        "{PER} and {PER} signed the {LAW} in {CITY} {day} .",
        "The {INSTITUTION} {said} the {thing} in {COUNTRY} would go ahead despite {issue} .",
        "{mood} in {CITY} as {role} {LASTNAME} {act} .",
        "{COUNTRY} and {COUNTRY} agreed the {LAW} after {num} rounds of talks .",
        "Polls give the {PARTY} {score} before the {thing} , the {PAPER} reported .",
    ],
    "technology": [
        "{TECH_COMPANY} {act} at the {TECH_EVENT} in {CITY} {day} .",
        "{role} {PER} {said} the new {PRODUCT} is {score} .",
        "{TECH_COMPANY} {beat} {TECH_COMPANY} with its new {thing} .",
        "The {PRODUCT} from {TECH_COMPANY} goes on sale in {COUNTRY} next month .",
        "{NATIONALITY} {role} {PER} built a {thing} that runs on the {PRODUCT} .",
        "{LASTNAME} {said} {issue} slowed work on the {thing} at {TECH_COMPANY} .",
        "After the update to {PRODUCT} , {mood} across {COUNTRY} .",
        "{TECH_COMPANY} opened a {thing} lab in {CITY} led by {PER} .",
        "At {TECH_EVENT} , {role} {PER} showed a {thing} that is {score} .",
        "The {PAPER} reported that {TECH_COMPANY} {act} to address {issue} .",
        "{PER} left {TECH_COMPANY} to found a {thing} startup in {CITY} .",
        "{TECH_COMPANY} and {TECH_COMPANY} will share {thing} patents , {role} {LASTNAME} {said} .",
    ],
    "business": [
        "{FIRM} {act} as {mood} {day} .",
        "{role} {PER} {said} {FIRM} {beat} {FIRM} in a deal worth {score} .",
        "The {BUSINESS_BODY} in {CITY} blamed {issue} as the {INDEX} slipped {day} .",
        "{FIRM} {beat} {FIRM} after the {thing} , {role} {LASTNAME} {said} .",
        "{NATIONALITY} {role} {PER} expects {issue} to hit the {thing} .",
        "{FIRM} shares rose {score} on the {INDEX} after the {thing} .",
        "The {BUSINESS_BODY} approved the {thing} between {FIRM} and {FIRM} .",
        "{LASTNAME} , {role} at {FIRM} , {said} {issue} will weigh on profits in {COUNTRY} .",
        "{FIRM} opened a plant in {CITY} , creating {num} hundred jobs .",
        "Analysts at {FIRM} cut their {thing} outlook for {COUNTRY} because of {issue} .",
        "{mood} in {CITY} after the {BUSINESS_BODY} {act} .",
        "The {PAPER} said {FIRM} {act} in {COUNTRY} .",
    ],
    # Shared by every topic: only the topic's own words and entities tell them apart.
    "shared": [
        "{PER} met {PER} in {CITY} {day} to discuss {issue} .",
        "The {PAPER} quoted {role} {PER} on the {thing} in {COUNTRY} .",
        "{role} {LASTNAME} {said} the {thing} showed that {mood} .",
        "In {COUNTRY} , {ORG} {act} {day} .",
        "{ORG} {said} {issue} would shape the {thing} , according to {PER} .",
        "{NATIONALITY} officials praised {ORG} after the {thing} in {CITY} .",
        "A {role} from {CITY} {said} the {EVENT} raised questions about {issue} .",
    ],
}
SLOT = re.compile(r"\{([A-Za-z_]+)\}")


class NamePicker:
    """Picks names for one split: train never sees the held-out quarter of a list, validation / test often do."""

    def __init__(self, rng: random.Random, split: str):
        self.rng = rng
        self.evaluation = split != "train"
        self.used = set()  # names of the current sentence ("X beat X" reads wrong)

    def pick(self, names: list[str]) -> str:
        cut = len(names) - max(1, int(len(names) * HELD_OUT_SHARE))
        pool = names[cut:] if self.evaluation and self.rng.random() < HELD_OUT_PICK else names[:cut]
        name = self.rng.choice(pool)
        while name in self.used and len(set(pool) - self.used) > 0:
            name = self.rng.choice(pool)
        self.used.add(name)
        return name


def fill_slot(slot: str, topic: str, picker: NamePicker, rng: random.Random):
    """(words, tags) for one template slot."""
    if slot in ("PER", "LASTNAME"):
        words = [picker.pick(FIRST_NAMES), picker.pick(LAST_NAMES)] if slot == "PER" else [picker.pick(LAST_NAMES)]
        return words, ["B-PER"] + ["I-PER"] * (len(words) - 1)
    if slot in ("ORG", "EVENT"):
        # 15% of the time borrow another topic's entity, so an entity name alone does not give the topic away.
        owner = rng.choice([t for t in TOPIC_ENTITIES if t != topic]) if rng.random() < 0.15 else topic
        slot = rng.choice(TOPIC_ENTITIES[owner][slot])
    if slot in ENTITY_LISTS:
        entity_type, names = ENTITY_LISTS[slot]
        words = picker.pick(names).split()
        return words, [f"B-{entity_type}"] + [f"I-{entity_type}"] * (len(words) - 1)
    pool = COMMON_WORDS.get(slot) or TOPIC_WORDS[topic][slot]
    words = rng.choice(pool).split()
    return words, ["O"] * len(words)


def make_sentence(topic: str, picker: NamePicker, rng: random.Random) -> dict:
    templates = TEMPLATES[topic] if rng.random() < 0.75 else TEMPLATES["shared"]
    picker.used.clear()
    tokens, tags = [], []
    for piece in rng.choice(templates).split():
        match = SLOT.fullmatch(piece)
        words, word_tags = fill_slot(match.group(1), topic, picker, rng) if match else ([piece], ["O"])
        tokens += words
        tags += word_tags
    tokens[0] = tokens[0][:1].upper() + tokens[0][1:]
    return {"tokens": tokens, "tags": tags, "topic": topic}


def generate(out_dir: Path):
    out_dir.mkdir(parents=True, exist_ok=True)
    topics = [topic for topic in TEMPLATES if topic != "shared"]
    seen = set()
    for split, size in SIZES.items():
        rng = random.Random(SEEDS[split])
        picker = NamePicker(rng, split)
        rows = []
        while len(rows) < size:
            # Round-robin topics keep the splits balanced; duplicates (also across splits) are drawn again.
            row = make_sentence(topics[len(rows) % len(topics)], picker, rng)
            key = " ".join(row["tokens"])
            if key not in seen:
                seen.add(key)
                rows.append(row)
        rng.shuffle(rows)
        with open(out_dir / f"{split}.jsonl", "w", encoding="utf-8") as handle:
            for row in rows:
                handle.write(json.dumps(row, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "demo", help="output folder")
    generate(parser.parse_args().out)
