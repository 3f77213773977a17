"""Small general-knowledge sets for model utility, written by the project.

Same shape as TOFU's ``real_authors_perturbed`` / ``world_facts_perturbed``: ``question``,
``answer`` and three wrong ``perturbed_answer``s. Facts a small instruction-tuned model
(SmolLM2-135M-Instruct) mostly gets right, so that a drop after unlearning is visible.
"""

from __future__ import annotations

_WORLD_FACTS = [
    ("What is the capital of France?", "Paris", ["London", "Berlin", "Madrid"]),
    ("What is the capital of Japan?", "Tokyo", ["Beijing", "Seoul", "Bangkok"]),
    ("What is the capital of Italy?", "Rome", ["Milan", "Venice", "Naples"]),
    ("What is the capital of Germany?", "Berlin", ["Munich", "Hamburg", "Vienna"]),
    ("What is the capital of Spain?", "Madrid", ["Barcelona", "Lisbon", "Seville"]),
    ("What is the capital of the United Kingdom?", "London", ["Manchester", "Dublin", "Edinburgh"]),
    ("What is the capital of Russia?", "Moscow", ["Saint Petersburg", "Kiev", "Minsk"]),
    ("What is the capital of Egypt?", "Cairo", ["Alexandria", "Luxor", "Giza"]),
    ("Which planet is known as the Red Planet?", "Mars", ["Venus", "Jupiter", "Saturn"]),
    ("What is the largest planet in our solar system?", "Jupiter", ["Saturn", "Neptune", "Earth"]),
    ("What is the largest ocean on Earth?", "Pacific Ocean", ["Atlantic Ocean", "Indian Ocean", "Arctic Ocean"]),
    ("In which country are the Pyramids of Giza?", "Egypt", ["Mexico", "Peru", "Greece"]),
    ("Where is the Eiffel Tower?", "Paris", ["Rome", "London", "New York"]),
    ("What gas do plants absorb from the air for photosynthesis?", "Carbon dioxide", ["Oxygen", "Nitrogen", "Helium"]),
    ("What is the chemical symbol for water?", "H2O", ["CO2", "NaCl", "O2"]),
    ("How many days are there in a week?", "Seven", ["Five", "Ten", "Six"]),
    ("How many continents are there on Earth?", "Seven", ["Five", "Nine", "Three"]),
    ("What is the freezing point of water in degrees Celsius?", "0 degrees", ["100 degrees", "50 degrees", "10 degrees"]),
    ("Which animal is known as the King of the Jungle?", "The lion", ["The elephant", "The tiger", "The giraffe"]),
    ("What is the tallest mountain in the world?", "Mount Everest", ["Mont Blanc", "Kilimanjaro", "Mount Fuji"]),
    ("What color is the sky on a clear day?", "Blue", ["Green", "Red", "Yellow"]),
    ("Which country has the largest population in South America?", "Brazil", ["Chile", "Peru", "Uruguay"]),
    ("What language is mainly spoken in Brazil?", "Portuguese", ["Spanish", "French", "Italian"]),
    ("What is the currency of the United States?", "The US dollar", ["The euro", "The yen", "The pound"]),
    ("Who painted the Mona Lisa?", "Leonardo da Vinci", ["Pablo Picasso", "Vincent van Gogh", "Claude Monet"]),
    ("What is the closest star to Earth?", "The Sun", ["Sirius", "Polaris", "Vega"]),
    ("What do bees make?", "Honey", ["Milk", "Silk", "Wax paper"]),
    ("What is the boiling point of water in degrees Celsius?", "100 degrees", ["0 degrees", "50 degrees", "200 degrees"]),
    ("Which organ pumps blood through the human body?", "The heart", ["The liver", "The lungs", "The kidney"]),
    ("What is the largest country in the world by area?", "Russia", ["Canada", "China", "Brazil"]),
]

_REAL_AUTHORS = [
    ("Who wrote 'Romeo and Juliet'?", "William Shakespeare", ["Charles Dickens", "Jane Austen", "Mark Twain"]),
    ("Who wrote 'Harry Potter and the Philosopher's Stone'?", "J.K. Rowling", ["Stephen King", "Roald Dahl", "C.S. Lewis"]),
    ("Who wrote 'Pride and Prejudice'?", "Jane Austen", ["Emily Bronte", "Virginia Woolf", "Mary Shelley"]),
    ("Who wrote the novel '1984'?", "George Orwell", ["Aldous Huxley", "Ray Bradbury", "H.G. Wells"]),
    ("Who wrote 'The Lord of the Rings'?", "J.R.R. Tolkien", ["C.S. Lewis", "George R.R. Martin", "Terry Pratchett"]),
    ("Who wrote 'Adventures of Huckleberry Finn'?", "Mark Twain", ["Herman Melville", "Jack London", "Edgar Allan Poe"]),
    ("Who created the detective Sherlock Holmes?", "Arthur Conan Doyle", ["Agatha Christie", "Ian Fleming", "Dan Brown"]),
    ("Who wrote 'Oliver Twist'?", "Charles Dickens", ["Thomas Hardy", "Jane Austen", "Oscar Wilde"]),
    ("Who wrote 'The Old Man and the Sea'?", "Ernest Hemingway", ["John Steinbeck", "William Faulkner", "F. Scott Fitzgerald"]),
    ("Who wrote 'War and Peace'?", "Leo Tolstoy", ["Fyodor Dostoevsky", "Anton Chekhov", "Maxim Gorky"]),
    ("Who wrote 'The Great Gatsby'?", "F. Scott Fitzgerald", ["Ernest Hemingway", "Mark Twain", "John Steinbeck"]),
    ("Who wrote 'Murder on the Orient Express'?", "Agatha Christie", ["Arthur Conan Doyle", "Dorothy L. Sayers", "Raymond Chandler"]),
    ("Who wrote 'A Game of Thrones'?", "George R.R. Martin", ["J.R.R. Tolkien", "Robert Jordan", "Brandon Sanderson"]),
    ("Who wrote 'The Adventures of Tom Sawyer'?", "Mark Twain", ["Charles Dickens", "Jack London", "Walt Whitman"]),
    ("Who wrote 'Hamlet'?", "William Shakespeare", ["Christopher Marlowe", "John Milton", "Ben Jonson"]),
    ("Who wrote 'Frankenstein'?", "Mary Shelley", ["Bram Stoker", "Jane Austen", "Emily Bronte"]),
    ("Who wrote 'Dracula'?", "Bram Stoker", ["Mary Shelley", "Edgar Allan Poe", "Oscar Wilde"]),
    ("Who wrote 'The Cat in the Hat'?", "Dr. Seuss", ["Roald Dahl", "Beatrix Potter", "Eric Carle"]),
    ("Who wrote 'Charlie and the Chocolate Factory'?", "Roald Dahl", ["Dr. Seuss", "J.K. Rowling", "Lewis Carroll"]),
    ("Who wrote 'Alice's Adventures in Wonderland'?", "Lewis Carroll", ["Roald Dahl", "Beatrix Potter", "J.M. Barrie"]),
]


def _records(rows: list[tuple[str, str, list[str]]]) -> list[dict]:
    return [{"question": q, "answer": a, "perturbed_answer": list(wrong)} for q, a, wrong in rows]


def world_facts() -> list[dict]:
    """General-knowledge questions with three wrong answers each."""
    return _records(_WORLD_FACTS)


def real_authors() -> list[dict]:
    """Questions about real, famous authors with three wrong answers each."""
    return _records(_REAL_AUTHORS)
