"""Small general-knowledge sets for model utility, written by the project.

Same shape as TOFU's ``real_authors_perturbed`` / ``world_facts_perturbed``: ``question``,
``answer`` and three wrong ``perturbed_answer``s. Facts a small instruction-tuned model
(SmolLM2-135M-Instruct) mostly gets right, so that a drop after unlearning is visible.

Each row is ``(question, sentence template, right option, three wrong options)``; every answer is
the template filled with an option ("The capital of France is Paris."), the way a chat model
answers. Bare options ("Paris") would be scored as a whole reply followed by EOS, which a chat
model finds unlikely whether the option is right or wrong: measured on SmolLM2-135M-Instruct,
the right option had the highest length-normalised probability for 9 of the 30 world facts
(chance: 7.5) and 7 of the 20 real-author questions as bare words, and for 26 / 30 and 17 / 20
as sentences.
"""

from __future__ import annotations

_WORLD_FACTS = [
    ('What is the capital of France?', 'The capital of France is {}.',
     'Paris', ['London', 'Berlin', 'Madrid']),
    ('What is the capital of Japan?', 'The capital of Japan is {}.',
     'Tokyo', ['Beijing', 'Seoul', 'Bangkok']),
    ('What is the capital of Italy?', 'The capital of Italy is {}.',
     'Rome', ['Milan', 'Venice', 'Naples']),
    ('What is the capital of Germany?', 'The capital of Germany is {}.',
     'Berlin', ['Munich', 'Hamburg', 'Vienna']),
    ('What is the capital of Spain?', 'The capital of Spain is {}.',
     'Madrid', ['Barcelona', 'Lisbon', 'Seville']),
    ('What is the capital of the United Kingdom?', 'The capital of the United Kingdom is {}.',
     'London', ['Manchester', 'Dublin', 'Edinburgh']),
    ('What is the capital of Russia?', 'The capital of Russia is {}.',
     'Moscow', ['Saint Petersburg', 'Kiev', 'Minsk']),
    ('What is the capital of Egypt?', 'The capital of Egypt is {}.',
     'Cairo', ['Alexandria', 'Luxor', 'Giza']),
    ('Which planet is known as the Red Planet?', '{} is known as the Red Planet.',
     'Mars', ['Venus', 'Jupiter', 'Saturn']),
    ('What is the largest planet in our solar system?', 'The largest planet in our solar system is {}.',
     'Jupiter', ['Saturn', 'Neptune', 'Earth']),
    ('What is the largest ocean on Earth?', 'The largest ocean on Earth is the {}.',
     'Pacific Ocean', ['Atlantic Ocean', 'Indian Ocean', 'Arctic Ocean']),
    ('In which country are the Pyramids of Giza?', 'The Pyramids of Giza are in {}.',
     'Egypt', ['Mexico', 'Peru', 'Greece']),
    ('Where is the Eiffel Tower?', 'The Eiffel Tower is in {}.',
     'Paris', ['Rome', 'London', 'New York']),
    ('What gas do plants absorb from the air for photosynthesis?', 'Plants absorb {} from the air for photosynthesis.',
     'Carbon dioxide', ['Oxygen', 'Nitrogen', 'Helium']),
    ('What is the chemical symbol for water?', 'The chemical symbol for water is {}.',
     'H2O', ['CO2', 'NaCl', 'O2']),
    ('How many days are there in a week?', 'There are {} days in a week.',
     'Seven', ['Five', 'Ten', 'Six']),
    ('How many continents are there on Earth?', 'There are {} continents on Earth.',
     'Seven', ['Five', 'Nine', 'Three']),
    ('What is the freezing point of water in degrees Celsius?', 'The freezing point of water is {} Celsius.',
     '0 degrees', ['100 degrees', '50 degrees', '10 degrees']),
    ('Which animal is known as the King of the Jungle?', '{} is known as the King of the Jungle.',
     'The lion', ['The elephant', 'The tiger', 'The giraffe']),
    ('What is the tallest mountain in the world?', 'The tallest mountain in the world is {}.',
     'Mount Everest', ['Mont Blanc', 'Kilimanjaro', 'Mount Fuji']),
    ('What color is the sky on a clear day?', 'On a clear day the sky is {}.',
     'Blue', ['Green', 'Red', 'Yellow']),
    ('Which country has the largest population in South America?', 'The country with the largest population in South America is {}.',
     'Brazil', ['Chile', 'Peru', 'Uruguay']),
    ('What language is mainly spoken in Brazil?', 'The language mainly spoken in Brazil is {}.',
     'Portuguese', ['Spanish', 'French', 'Italian']),
    ('What is the currency of the United States?', 'The currency of the United States is {}.',
     'The US dollar', ['The euro', 'The yen', 'The pound']),
    ('Who painted the Mona Lisa?', 'The Mona Lisa was painted by {}.',
     'Leonardo da Vinci', ['Pablo Picasso', 'Vincent van Gogh', 'Claude Monet']),
    ('What is the closest star to Earth?', 'The closest star to Earth is {}.',
     'The Sun', ['Sirius', 'Polaris', 'Vega']),
    ('What do bees make?', 'Bees make {}.',
     'Honey', ['Milk', 'Silk', 'Wax paper']),
    ('What is the boiling point of water in degrees Celsius?', 'The boiling point of water is {} Celsius.',
     '100 degrees', ['0 degrees', '50 degrees', '200 degrees']),
    ('Which organ pumps blood through the human body?', '{} pumps blood through the human body.',
     'The heart', ['The liver', 'The lungs', 'The kidney']),
    ('What is the largest country in the world by area?', 'The largest country in the world by area is {}.',
     'Russia', ['Canada', 'China', 'Brazil']),
]

_REAL_AUTHORS = [
    ("Who wrote 'Romeo and Juliet'?", "'Romeo and Juliet' was written by {}.",
     'William Shakespeare', ['Charles Dickens', 'Jane Austen', 'Mark Twain']),
    ("Who wrote 'Harry Potter and the Philosopher's Stone'?", "'Harry Potter and the Philosopher's Stone' was written by {}.",
     'J.K. Rowling', ['Stephen King', 'Roald Dahl', 'C.S. Lewis']),
    ("Who wrote 'Pride and Prejudice'?", "'Pride and Prejudice' was written by {}.",
     'Jane Austen', ['Emily Bronte', 'Virginia Woolf', 'Mary Shelley']),
    ("Who wrote the novel '1984'?", "The novel '1984' was written by {}.",
     'George Orwell', ['Aldous Huxley', 'Ray Bradbury', 'H.G. Wells']),
    ("Who wrote 'The Lord of the Rings'?", "'The Lord of the Rings' was written by {}.",
     'J.R.R. Tolkien', ['C.S. Lewis', 'George R.R. Martin', 'Terry Pratchett']),
    ("Who wrote 'Adventures of Huckleberry Finn'?", "'Adventures of Huckleberry Finn' was written by {}.",
     'Mark Twain', ['Herman Melville', 'Jack London', 'Edgar Allan Poe']),
    ('Who created the detective Sherlock Holmes?', 'The detective Sherlock Holmes was created by {}.',
     'Arthur Conan Doyle', ['Agatha Christie', 'Ian Fleming', 'Dan Brown']),
    ("Who wrote 'Oliver Twist'?", "'Oliver Twist' was written by {}.",
     'Charles Dickens', ['Thomas Hardy', 'Jane Austen', 'Oscar Wilde']),
    ("Who wrote 'The Old Man and the Sea'?", "'The Old Man and the Sea' was written by {}.",
     'Ernest Hemingway', ['John Steinbeck', 'William Faulkner', 'F. Scott Fitzgerald']),
    ("Who wrote 'War and Peace'?", "'War and Peace' was written by {}.",
     'Leo Tolstoy', ['Fyodor Dostoevsky', 'Anton Chekhov', 'Maxim Gorky']),
    ("Who wrote 'The Great Gatsby'?", "'The Great Gatsby' was written by {}.",
     'F. Scott Fitzgerald', ['Ernest Hemingway', 'Mark Twain', 'John Steinbeck']),
    ("Who wrote 'Murder on the Orient Express'?", "'Murder on the Orient Express' was written by {}.",
     'Agatha Christie', ['Arthur Conan Doyle', 'Dorothy L. Sayers', 'Raymond Chandler']),
    ("Who wrote 'A Game of Thrones'?", "'A Game of Thrones' was written by {}.",
     'George R.R. Martin', ['J.R.R. Tolkien', 'Robert Jordan', 'Brandon Sanderson']),
    ("Who wrote 'The Adventures of Tom Sawyer'?", "'The Adventures of Tom Sawyer' was written by {}.",
     'Mark Twain', ['Charles Dickens', 'Jack London', 'Walt Whitman']),
    ("Who wrote 'Hamlet'?", "'Hamlet' was written by {}.",
     'William Shakespeare', ['Christopher Marlowe', 'John Milton', 'Ben Jonson']),
    ("Who wrote 'Frankenstein'?", "'Frankenstein' was written by {}.",
     'Mary Shelley', ['Bram Stoker', 'Jane Austen', 'Emily Bronte']),
    ("Who wrote 'Dracula'?", "'Dracula' was written by {}.",
     'Bram Stoker', ['Mary Shelley', 'Edgar Allan Poe', 'Oscar Wilde']),
    ("Who wrote 'The Cat in the Hat'?", "'The Cat in the Hat' was written by {}.",
     'Dr. Seuss', ['Roald Dahl', 'Beatrix Potter', 'Eric Carle']),
    ("Who wrote 'Charlie and the Chocolate Factory'?", "'Charlie and the Chocolate Factory' was written by {}.",
     'Roald Dahl', ['Dr. Seuss', 'J.K. Rowling', 'Lewis Carroll']),
    ("Who wrote 'Alice's Adventures in Wonderland'?", "'Alice's Adventures in Wonderland' was written by {}.",
     'Lewis Carroll', ['Roald Dahl', 'Beatrix Potter', 'J.M. Barrie']),
]


def _sentence(template: str, option: str) -> str:
    text = template.format(option)
    return text[0].upper() + text[1:]


def _records(rows: list[tuple[str, str, str, list[str]]]) -> list[dict]:
    return [{"question": q, "answer": _sentence(t, a), "perturbed_answer": [_sentence(t, w) for w in wrong]}
            for q, t, a, wrong in rows]


def world_facts() -> list[dict]:
    """General-knowledge questions with three wrong answers each."""
    return _records(_WORLD_FACTS)


def real_authors() -> list[dict]:
    """Questions about real, famous authors with three wrong answers each."""
    return _records(_REAL_AUTHORS)
