"""Write the document-editing task set: short goal documents written for this project.

The user wants a document like the goal; the assistant has to find out what
it should say. Scored by word-level BLEU of the final document against the
goal. Deterministic; rerun to regenerate:

    python data/tasks/make_docs.py
"""


from task_files import write_split

DOCS = [
    ("email", "moving the team meeting",
     "Hi all, the weekly team meeting moves from Tuesday to Thursday at 10 am, starting next week. "
     "The room stays the same. Please update your calendars and tell me if Thursday does not work for you. "
     "Thanks, Dana"),
    ("notice", "a library closing for repairs",
     "The city library will be closed from March 3 to March 10 while the roof is repaired. "
     "Books can be returned in the drop box by the side door. Online loans continue as usual."),
    ("invitation", "a garden party",
     "You are invited to our garden party on Saturday, June 14, from 4 pm. We will have food, music and games "
     "for children. Please bring a chair if you can, and let us know by June 7 whether you are coming."),
    ("product note", "a water bottle",
     "This steel bottle keeps drinks cold for 24 hours and hot for 12. It holds 750 ml, fits most cup holders "
     "and has a leak-proof lid. Wash it by hand; it is not safe for the dishwasher."),
    ("apology", "a late delivery",
     "Dear customer, we are sorry that your order arrived four days late. The delay was caused by a problem at "
     "our warehouse. We have refunded your shipping cost, and your next order ships for free."),
    ("recipe intro", "a lentil soup",
     "This lentil soup is cheap, filling and ready in forty minutes. It needs only red lentils, an onion, "
     "carrots, a can of tomatoes and cumin. It keeps for three days in the fridge and freezes well."),
    ("bio", "a volunteer firefighter",
     "Maria Lopez has been a volunteer firefighter in her village for eleven years. She trains new volunteers "
     "on weekends and works as a nurse during the week. She lives with her two dogs."),
    ("announcement", "a new bus line",
     "From May 1, bus line 42 will connect the train station with the university every fifteen minutes. "
     "The first bus leaves at 6 am and the last at midnight. Tickets cost the same as on other lines."),
    ("reminder", "paying the club fee",
     "This is a reminder that the yearly club fee of 30 euros is due by the end of this month. You can pay "
     "by bank transfer or in cash at the next meeting. Members who have already paid can ignore this message."),
    ("review", "a small hotel",
     "The hotel is small but very clean, and the staff were friendly and helpful. Our room was quiet and the "
     "breakfast was fresh. The only problem was the slow wifi. We would stay here again."),
    ("summary", "a meeting about the school fair",
     "At the meeting we agreed to hold the school fair on the last Friday of September. Parents will run the "
     "food stands, and teachers will organize the games. The money raised will buy new books for the library."),
    ("thank-you note", "a neighbor who watered plants",
     "Dear Tom, thank you for watering our plants while we were away. They all look healthy and green. "
     "Please accept this small jar of honey from our trip. We are happy to return the favor any time."),
]
NUM_EVAL = 3


def make_tasks() -> list[dict]:
    tasks = []
    for i, (kind, topic, document) in enumerate(DOCS):
        tasks.append({
            "id": f"doc-{i:03d}",
            "task": "doc",
            "goal": (f"You want the assistant to write a short {kind} about {topic}. This is the text you have in "
                     f"mind; share its details only when asked:\n\n{document}"),
            "reference": document,
            "metadata": {"kind": kind, "topic": topic},
        })
    return tasks


def main() -> None:
    write_split("docs", make_tasks(), NUM_EVAL)


if __name__ == "__main__":
    main()
